"""Generate `docs/api.md`, the API reference, from the public API's docstrings.

    python docs/make_api_reference.py           # rewrite docs/api.md
    python docs/make_api_reference.py --check   # exit 1 if docs/api.md is stale (nothing written)

The public API is the `__all__` of each module in `MODULES`. For every name: its signature and
docstring; for classes also their public methods and properties (signature and the first
paragraph of the docstring), and the names they inherit from the project's own base classes.
The output depends only on the code: no timestamps, no memory addresses, names in `__all__`
order.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "api.md"
MODULES = (
    "mflow_sbi.models",
    "mflow_sbi.transforms",
    "mflow_sbi.training",
    "mflow_sbi.inference",
    "mflow_sbi.baselines",
    "mflow_sbi.diagnostics",
    "mflow_sbi.intrinsic_dimension",
    "mflow_sbi.simulator",
    "simulators",
    "simulators.lhc_like",
    "simulators.image_manifold",
    "mflow_sbi",  # the estimator protocol, its standardization and the registry; its other names point above
)
PROJECT_PACKAGES = ("mflow_sbi", "simulators")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _is_project(obj: object) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in PROJECT_PACKAGES


def own_docstring(obj: object) -> str | None:
    """The docstring written for `obj` itself: not inherited, not a dataclass's generated one."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
        if doc and dataclasses.is_dataclass(obj) and doc.startswith(obj.__name__ + "("):
            return None  # dataclasses write "Name(field: type = default, ...)" when there is none
    elif isinstance(obj, property):
        doc = obj.fget.__doc__ if obj.fget is not None else None
    else:
        doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if doc and doc.strip() else None


def public_api() -> dict[str, list[tuple[str, object]]]:
    """Module name → [(public name, object)], in `__all__` order."""
    api = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        api[module_name] = [(name, getattr(module, name)) for name in module.__all__]
    return api


def is_constant(obj: object) -> bool:
    return not (inspect.isclass(obj) or callable(obj))


def missing_docstrings() -> list[str]:
    """Public names (classes and functions; constants cannot carry one) without their own docstring."""
    return [
        f"{module}.{name}"
        for module, names in public_api().items()
        for name, obj in names
        if not is_constant(obj) and own_docstring(obj) is None
    ]


def missing_member_docstrings() -> list[str]:
    """Public methods and properties that the public classes define without a docstring
    (their own or one on the same member of a project base class)."""
    missing = []
    for module, names in public_api().items():
        for name, obj in names:
            if not inspect.isclass(obj) or not _is_project(obj):
                continue
            for member_name, member in obj.__dict__.items():
                if member_name.startswith("_") or not _is_member(member):
                    continue
                if _inherited_doc(obj, member_name) is None:
                    missing.append(f"{obj.__module__}.{obj.__qualname__}.{member_name}")
    return sorted(set(missing))


def _is_member(member: object) -> bool:
    return isinstance(member, (property, staticmethod, classmethod)) or inspect.isfunction(member)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than - and _ dropped."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _signature(obj: object) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return _ADDRESS.sub("", text)


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return "*(no docstring)*"
    return " ".join(doc.split("\n\n")[0].split())


def _inherited_doc(cls: type, name: str) -> str | None:
    """The docstring of `cls.name`, or of the same member in the project's own base classes
    (not torch's or zuko's: theirs describe their generic method, not this one)."""
    for base in cls.__mro__:
        if name in base.__dict__ and _is_project(base):
            doc = own_docstring(base.__dict__[name])
            if doc:
                return doc
    return None


def _members(cls: type) -> tuple[list[str], dict[str, list[str]]]:
    """Lines for the public methods/properties `cls` defines, and {project base: inherited names}."""
    lines = []
    for name, member in cls.__dict__.items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            lines.append(f"- property `{name}` — {_first_paragraph(_inherited_doc(cls, name))}")
        elif _is_member(member):
            function = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
            kind = "classmethod " if isinstance(member, classmethod) else "staticmethod " if isinstance(member, staticmethod) else ""
            signature = _signature(function)
            if isinstance(member, classmethod) or kind == "":
                signature = re.sub(r"^\((self|cls)(, )?", "(", signature)
            lines.append(f"- {kind}`{name}{signature}` — {_first_paragraph(_inherited_doc(cls, name))}")
    inherited: dict[str, list[str]] = {}
    seen = set(cls.__dict__)
    for base in cls.__mro__[1:]:
        if not _is_project(base):
            continue
        names = [
            name
            for name, member in base.__dict__.items()
            if not name.startswith("_")
            and name not in seen
            and _is_member(member)
        ]
        seen.update(base.__dict__)
        if names:
            inherited[f"{base.__module__}.{base.__qualname__}"] = names
    return lines, inherited


def _constant(obj: object) -> str:
    text = _ADDRESS.sub("", repr(obj))
    if len(text) > 300:
        text = text[:300] + " …"
    return f"`{type(obj).__name__}`: `{text}`" if "`" not in text else f"`{type(obj).__name__}`"


def render() -> str:
    api = public_api()
    out = [
        "# API reference",
        "",
        "Generated from the docstrings by `docs/make_api_reference.py`; do not edit by hand.",
        "Regenerate with `python docs/make_api_reference.py` (`--check` tells whether this file is stale).",
        "Concepts and worked examples: [the user guide](user_guide.md).",
        "",
        "## Contents",
        "",
    ]
    for module_name, names in api.items():
        out.append(f"- [`{module_name}`](#{_anchor(module_name)}): " + ", ".join(f"`{name}`" for name, _ in names))
    documented: dict[int, str] = {}  # id of a class or function -> the heading it is documented under
    for module_name, names in api.items():
        module = sys.modules[module_name]
        out += ["", f"## `{module_name}`", ""]
        if own_docstring(module):
            out += [own_docstring(module), ""]
        for name, obj in names:
            heading = f"{module_name}.{name}"
            out += [f"### `{heading}`", ""]
            if is_constant(obj):
                out += [f"Constant — {_constant(obj)}", ""]
                continue
            if id(obj) in documented:
                first = documented[id(obj)]
                out += [f"The same object as [`{first}`](#{_anchor(first)}).", ""]
                continue
            documented[id(obj)] = heading
            origin = f"{obj.__module__}.{obj.__qualname__}" if hasattr(obj, "__qualname__") else None
            if inspect.isclass(obj):
                signature = _signature(obj).removesuffix(" -> 'None'").removesuffix(" -> None")
                out += ["```python", f"class {name}{signature}", "```", ""]
            else:
                out += ["```python", f"{name}{_signature(obj)}", "```", ""]
            if origin and origin != f"{module_name}.{name}":
                out += [f"*Defined in* `{origin}`.", ""]
            out += [own_docstring(obj) or "*(no docstring)*", ""]
            if inspect.isclass(obj):
                lines, inherited = _members(obj)
                if lines:
                    out += ["Members:", ""] + lines + [""]
                for base, base_names in inherited.items():
                    out += [f"Inherited from `{base}`: " + ", ".join(f"`{n}`" for n in base_names) + ".", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is stale; write nothing")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write (default docs/api.md)")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.is_file() else None
        if current != text:
            print(f"{args.output} is stale; run: python docs/make_api_reference.py", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
