//! Times and durations on the command line: RFC 3339 instants (`2026-12-31T00:00:00Z`,
//! `2026-12-31T02:00:00+02:00`) and durations (`24h`, `10m`, `1h30m`, `7d`), without a time
//! zone database: an instant must carry its offset.

/// Nanoseconds since the epoch of an RFC 3339 instant, `None` if `text` is not one.
pub fn parse_instant(text: &str) -> Option<i64> {
    let t = text.trim();
    let (date, rest) = t.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, offset_s) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (c, off) = rest.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        let (oh, om): (i64, i64) = (oh.parse().ok()?, om.parse().ok()?);
        if oh > 23 || om > 59 {
            return None;
        }
        (c, sign * (oh * 3600 + om * 60))
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut c = hms.split(':');
    let (h, mi, s): (i64, i64, i64) = (
        c.next()?.parse().ok()?,
        c.next()?.parse().ok()?,
        c.next()?.parse().ok()?,
    );
    if c.next().is_some() || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let nanos: i64 = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("{frac:0<9}").parse().ok()?
    };
    // Days-from-civil, after Howard Hinnant's public-domain algorithm.
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// A duration such as `24h`, `10m`, `90s`, `7d` or `1h30m`, `None` if `text` is not one.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut any = false;
    for ch in text.trim().chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        let n: u64 = num.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        num.clear();
        any = true;
    }
    (any && num.is_empty() && total > 0).then(|| std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants() {
        assert_eq!(parse_instant("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_instant("2026-12-31T00:00:00Z"),
            Some(1_798_675_200_000_000_000)
        );
        assert_eq!(
            parse_instant("2026-12-31T02:00:00+02:00"),
            parse_instant("2026-12-31T00:00:00Z")
        );
        assert_eq!(parse_instant("1970-01-01T00:00:00.5Z"), Some(500_000_000));
        for bad in [
            "2026-12-31",
            "2026-13-01T00:00:00Z",
            "tomorrow",
            "2026-12-31T00:00:00",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86_400);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("2s").unwrap().as_secs(), 2);
        for bad in ["", "10", "h", "5x", "0s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
