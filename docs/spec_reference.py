"""Writes docs/spec.md, the reference of every spec key, from the pydantic models' field descriptions.

    python docs/spec_reference.py          # rewrite docs/spec.md
    python docs/spec_reference.py --check  # exit 1 if docs/spec.md differs from what the code says

tests/test_docs.py runs the check, so the reference cannot go stale.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from fairsweep.spec import SearchParam, Spec

OUT = Path(__file__).with_name("spec.md")
HEAD = """# The spec reference

A sweep is one YAML file. Every key below can also be set from the command line (`--set key=value`; a
list for a scalar key sets that key's grid: `--set finetune.mu=[0,0.01]`) and varied by a grid
(`sweep.grid`, dotted keys) or an Optuna search (`sweep.search.space`). Unknown keys are errors naming the
closest valid key. Generated from the code by `python docs/spec_reference.py`; do not edit by hand.
"""


def type_name(annotation) -> str:
    """A field's type as a reader writes it in YAML."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if origin is typing.Annotated:
        return type_name(args[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return {str: "text", int: "integer", float: "number", bool: "true \\| false"}.get(annotation,
                                                                                    getattr(annotation, "__name__",
                                                                                            str(annotation)))


def default_text(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return "`" + json.dumps(value) + "`"


def sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """(dotted key, model) of the spec and every section under it, in the order a spec is written."""
    out = [(prefix, model)]
    for name, field in model.model_fields.items():
        if typing.get_origin(field.annotation) is dict:  # a mapping of sections (the search space): its own entry
            continue
        for candidate in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                out.extend(sections(candidate, f"{prefix}{name}."))
                break
    return out


def reference() -> str:
    parts = [HEAD]
    for prefix, model in [*sections(Spec), ("sweep.search.space.<key>.", SearchParam)]:
        title = prefix.rstrip(".") or "the top level"
        doc = " ".join((model.__doc__ or "").split()) if model is not Spec else ""
        parts.append(f"\n## `{title}`\n" if prefix else f"\n## {title}\n")
        if doc and not doc.startswith(("Usage docs", "A base class")):
            parts.append(f"\n{doc}\n")
        if not model.model_fields:
            parts.append("\nNo keys.\n")
            continue
        parts.append("\n| key | type | default | meaning |\n|---|---|---|---|\n")
        for name, field in model.model_fields.items():
            meaning = (field.description or "").replace("|", "\\|")
            parts.append(f"| `{prefix}{name}` | {type_name(field.annotation)} | {default_text(field)} | {meaning} |\n")
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = reference()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            sys.exit(f"{OUT} is stale: run `python docs/spec_reference.py`")
        return
    OUT.write_text(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
