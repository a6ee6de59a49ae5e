# Stand-ins for the few parts of nixpkgs' `lib` and `pkgs` that ../module.nix uses, and a small
# evaluator for its options, so that tests/nixos.rs can evaluate the module with a bare
# `nix-instantiate` (no nixpkgs, no store writes). They follow nixpkgs' behaviour where the
# module depends on it: option defaults, type checks, unknown options, `mkIf`, submodules that
# see their attribute name. Anything more (priorities, merging several definitions, docs) is
# left out.
let
  inherit (builtins)
    attrNames
    concatStringsSep
    elemAt
    filter
    genList
    head
    isAttrs
    isBool
    isFunction
    isList
    isString
    length
    mapAttrs
    ;

  last = l: elemAt l (length l - 1);
  showLoc = concatStringsSep ".";
  isOption = v: isAttrs v && (v._type or null) == "option";
  typeError = loc: description: throw "The option `${showLoc loc}' is not of type `${description}'.";

  # A type is { description; merge = loc: value: checked value; }.
  simple = description: check: {
    inherit description;
    merge = loc: v: if check v then v else typeError loc description;
  };

  types = {
    bool = simple "boolean" isBool;
    str = simple "string" isString;
    package = simple "package" (v: isAttrs v && v ? outPath);
    int = simple "signed integer" builtins.isInt;
    enum = values: simple "one of ${concatStringsSep ", " values}" (v: builtins.elem v values);
    # A path value (`./secrets/web1.vfsb`) or a string holding one; as in nixpkgs.
    path = simple "path" (v: builtins.isPath v || (isString v && builtins.substring 0 1 v == "/"));
    nullOr = t: rec {
      description = "null or ${t.description}";
      merge = loc: v: if v == null then null else t.merge loc v;
    };
    listOf = t: rec {
      description = "list of ${t.description}";
      merge =
        loc: v:
        if isList v then
          genList (i: t.merge (loc ++ [ "[${toString i}]" ]) (elemAt v i)) (length v)
        else
          typeError loc description;
    };
    attrsOf = t: rec {
      description = "attribute set of ${t.description}";
      merge = loc: v: if isAttrs v then mapAttrs (n: t.merge (loc ++ [ n ])) v else typeError loc description;
    };
    # As in nixpkgs, a submodule given as a function receives its attribute name.
    submodule = m: {
      description = "submodule";
      merge =
        loc: v:
        let
          module = if isFunction m then m { name = last loc; inherit lib; } else m;
        in
        if isAttrs v then evalTree loc module.options v else typeError loc "submodule";
    };
  };

  # The values of an option tree, given the user's definitions.
  evalTree =
    loc: options: defs:
    let
      unknown = filter (n: !(options ? ${n})) (attrNames defs);
    in
    if unknown != [ ] then
      throw "The option `${showLoc (loc ++ [ (head unknown) ])}' does not exist."
    else
      mapAttrs (
        n: o:
        if isOption o then
          o.type.merge (loc ++ [ n ]) (
            if defs ? ${n} then
              defs.${n}
            else if o ? default then
              o.default
            else
              throw "The option `${showLoc (loc ++ [ n ])}' is used but not defined."
          )
        else
          evalTree (loc ++ [ n ]) o (defs.${n} or { })
      ) options;

  resolveIf = v: if (v._type or null) == "if" then (if v.condition then resolveIf v.content else { }) else v;

  lib = {
    inherit types;
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: lib.mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = "Whether to enable ${name}.";
    };
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };
    mapAttrsToList = f: attrs: map (n: f n attrs.${n}) (attrNames attrs);
  };
in
{
  inherit lib;

  # `pkgs`: derivations are attribute sets whose outPath is where the test says they are.
  pkgs =
    { fileDir, utilLinux }:
    {
      writeText = name: text: {
        inherit name text;
        outPath = "${fileDir}/${name}";
      };
      runCommand = name: env: buildCommand: {
        inherit name env buildCommand;
        outPath = "${fileDir}/${name}";
      };
      util-linux.outPath = utilLinux;
    };

  # Evaluates a NixOS module against the user's definitions: the option values the module sees
  # as `config`, and the configuration it sets (after `mkIf`).
  evalModule =
    { module, pkgs, defs }:
    let
      m = module {
        config = values;
        inherit lib pkgs;
      };
      values = evalTree [ ] m.options defs;
    in
    {
      config = values;
      out = resolveIf m.config;
    };
}
