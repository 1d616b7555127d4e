"""The course registry: `course.toml` says what the course holds; every path is derived from it."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:   # Python 3.10: the same parser, as a package (a dependency there)
    import tomli as tomllib

FRAMEWORKS = ("torch", "tensorflow", "both")
KINDS = ("equivalence", "cross", "graph", "performance", "introspection")
REGISTRY_FILE = "course.toml"


class RegistryError(ValueError):
    """course.toml is missing, malformed, or names something that does not exist."""


@dataclass(frozen=True)
class Part:
    id: str
    title: str
    points: float
    framework: str
    kind: str
    hint: str
    rtol: float = 1e-4
    atol: float = 1e-5
    threshold_cpu: float | None = None
    threshold_cuda: float | None = None
    compiles: bool = False   # the text allows compiling (torch.compile, XLA): first calls get the compile allowance
    # Hints for the failures the grader can name (autograder._compare.DIAGNOSES): shown instead of `hint` when a
    # check diagnoses that failure. A dict in a frozen dataclass: read it, never change it.
    hints: dict = field(default_factory=dict, hash=False, compare=False)
    concept: str = ""   # the first-level hint: the idea, naming no API (`clash hint` shows it before `hint`)

    def threshold(self, device: str) -> float | None:
        return self.threshold_cuda if device.startswith("cuda") else self.threshold_cpu

    def hint_for(self, diagnosis: str | None) -> str:
        """The hint for a diagnosed failure, else the part's own."""
        return self.hints.get(diagnosis, self.hint) if diagnosis else self.hint


@dataclass(frozen=True)
class Exercise:
    id: str
    title: str
    parts: tuple[Part, ...]

    @property
    def max_score(self) -> float:
        return sum(p.points for p in self.parts)

    def part(self, part_id: str) -> Part:
        for p in self.parts:
            if p.id == part_id:
                return p
        raise RegistryError(f"exercise {self.id} has no part {part_id!r}; parts: {', '.join(p.id for p in self.parts)}")


@dataclass(frozen=True)
class Module:
    id: str
    title: str
    exercise: Exercise
    root: Path = field(repr=False, compare=False)

    # Every path below is derived from the module id, never written in the registry.
    @property
    def lessons(self) -> dict[str, Path]:
        d = self.root / "lessons" / self.id
        return {"torch": d / f"{self.id}_pytorch.ipynb", "tensorflow": d / f"{self.id}_tensorflow.ipynb"}

    @property
    def solution(self) -> Path:
        return self.root / "solutions" / self.id / f"{self.id}.ipynb"

    @property
    def exercise_notebook(self) -> Path:
        return self.root / "exercises" / self.id / f"{self.id}.ipynb"

    @property
    def spec_module(self) -> str:
        return f"autograder.exercises.m{self.id}"


@dataclass(frozen=True)
class Limits:
    startup_timeout_s: float = 180.0
    call_timeout_s: float = 60.0
    compile_timeout_s: float = 240.0
    memory_mb: int = 4096
    output_kb: int = 256


@dataclass(frozen=True)
class Course:
    title: str
    root: Path
    modules: tuple[Module, ...]
    limits: Limits

    @property
    def exercises(self) -> tuple[Exercise, ...]:
        return tuple(m.exercise for m in self.modules)

    def module(self, exercise_id: str) -> Module:
        for m in self.modules:
            if m.id == exercise_id:
                return m
        raise RegistryError(f"no exercise {exercise_id!r}; the course has: {', '.join(m.id for m in self.modules)}")

    def resolve(self, target: str) -> tuple[Module, tuple[str, ...]]:
        """'01_tensors' -> all parts; '01_tensors.torch_grad' -> one part; 'torch_grad' -> the part, if unique."""
        if "." in target:
            ex_id, part_id = target.split(".", 1)
            module = self.module(ex_id)
            return module, (module.exercise.part(part_id).id,)
        if any(m.id == target for m in self.modules):
            module = self.module(target)
            return module, tuple(p.id for p in module.exercise.parts)
        owners = [m for m in self.modules for p in m.exercise.parts if p.id == target]
        if len(owners) == 1:
            return owners[0], (target,)
        if owners:
            raise RegistryError(f"part {target!r} is in several exercises; write EXERCISE.PART")
        raise RegistryError(f"no exercise or part {target!r}; try `clash list`")


def find_root(start: Path | None = None) -> Path:
    """The course root: $CLASH_ROOT, else the nearest folder holding course.toml above `start` (or cwd),
    else the folder this package was installed from (an editable install)."""
    if os.environ.get("CLASH_ROOT"):
        return Path(os.environ["CLASH_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / REGISTRY_FILE).is_file():
            return d
    pkg_parent = Path(__file__).resolve().parent.parent
    if (pkg_parent / REGISTRY_FILE).is_file():
        return pkg_parent
    raise RegistryError(f"no {REGISTRY_FILE} in {here} or above: run clash inside your copy of the course (`clash "
                        f"init` makes one) or set CLASH_ROOT")


def _require(table: dict, key: str, where: str, kind: type | tuple = str):
    if key not in table:
        raise RegistryError(f"{REGISTRY_FILE}: {where} lacks {key!r}")
    value = table[key]
    if not isinstance(value, kind):
        wanted = getattr(kind, "__name__", kind)
        raise RegistryError(f"{REGISTRY_FILE}: {where}.{key} should be {wanted}, got {value!r}")
    return value


def _part(raw: dict, where: str) -> Part:
    pid = _require(raw, "id", where)
    where = f"{where} part {pid}"
    framework = _require(raw, "framework", where)
    kind = _require(raw, "kind", where)
    if framework not in FRAMEWORKS:
        raise RegistryError(f"{REGISTRY_FILE}: {where}: framework {framework!r} is not one of {FRAMEWORKS}")
    if kind not in KINDS:
        raise RegistryError(f"{REGISTRY_FILE}: {where}: kind {kind!r} is not one of {KINDS}")
    extra = {k: float(raw[k]) for k in ("rtol", "atol", "threshold_cpu", "threshold_cuda") if k in raw}
    if kind == "performance" and not ("threshold_cpu" in extra and "threshold_cuda" in extra):
        raise RegistryError(f"{REGISTRY_FILE}: {where}: a performance part needs threshold_cpu and threshold_cuda")
    if "compiles" in raw:
        extra["compiles"] = _require(raw, "compiles", where, bool)
    if "concept" in raw:
        extra["concept"] = _require(raw, "concept", where)
    if "hints" in raw:
        from autograder._compare import DIAGNOSES
        hints = _require(raw, "hints", where, dict)
        for key, text in hints.items():
            if key not in DIAGNOSES:
                raise RegistryError(f"{REGISTRY_FILE}: {where}: hints.{key} names no failure the grader diagnoses "
                                    f"(one of {', '.join(DIAGNOSES)})")
            if not isinstance(text, str) or not text.strip():
                raise RegistryError(f"{REGISTRY_FILE}: {where}: hints.{key} should be a sentence, got {text!r}")
        extra["hints"] = dict(hints)
    unknown = set(raw) - {"id", "title", "points", "framework", "kind", "hint", *extra}
    if unknown:
        raise RegistryError(f"{REGISTRY_FILE}: {where}: unknown keys {sorted(unknown)}")
    return Part(id=pid, title=_require(raw, "title", where), points=float(_require(raw, "points", where, (int, float))),
                framework=framework, kind=kind, hint=_require(raw, "hint", where), **extra)


def load_course(root: Path | None = None) -> Course:
    root = Path(root).resolve() if root else find_root()
    path = root / REGISTRY_FILE
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RegistryError(f"{path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(f"{path}: {e}") from None
    modules = []
    for raw in data.get("module", []):
        mid = _require(raw, "id", "a [[module]]")
        ex = _require(raw, "exercise", f"module {mid}", dict)
        parts = tuple(_part(p, f"module {mid}") for p in ex.get("part", []))
        if not parts:
            raise RegistryError(f"{REGISTRY_FILE}: module {mid}'s exercise has no parts")
        if len({p.id for p in parts}) != len(parts):
            raise RegistryError(f"{REGISTRY_FILE}: module {mid} repeats a part id")
        exercise = Exercise(id=mid, title=_require(ex, "title", f"module {mid}.exercise"), parts=parts)
        modules.append(Module(id=mid, title=_require(raw, "title", f"module {mid}"), exercise=exercise, root=root))
    if not modules:
        raise RegistryError(f"{path} registers no modules")
    if len({m.id for m in modules}) != len(modules):
        raise RegistryError(f"{REGISTRY_FILE} repeats a module id")
    limits = Limits(**data.get("limits", {}))
    return Course(title=data.get("course", {}).get("title", "course"), root=root, modules=tuple(modules), limits=limits)
