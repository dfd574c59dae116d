"""Sessions named for what they do: `nox -s tests`, `nox -s lint`, ...

`nox -s tests` is the suite CI runs (every backend in one run);
`nox -s tests_backend` runs it once per backend.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

BACKENDS = ["asyncio", "trio", "uvloop"]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, on asyncio, trio and asyncio+uvloop."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
@nox.parametrize("backend", BACKENDS)
def tests_backend(session: nox.Session, backend: str) -> None:
    """The suite with the backend-parametrized tests on one backend only
    (selected by their backend parameter, see tests/conftest.py); the other
    tests run once."""
    session.install("-e", ".[test]")
    session.run("pytest", f"--backend={backend}", *session.posargs)


@nox.session(python=["3.10", "3.11", "3.12", "3.13"])
def tests_python(session: nox.Session) -> None:
    """The whole test suite on each supported Python (those on PATH)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def properties(session: nox.Session) -> None:
    """Property-based tests with a larger example budget than the default run."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "tests/properties",
        "--hypothesis-profile=thorough",
        "--timeout=1200",  # ten times the default examples: ten times the time per test
        *session.posargs,
    )


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "proxima", "tests", "benchmarks", "examples", "noxfile.py")
    session.run(
        "ruff", "format", "--check", "proxima", "tests", "benchmarks", "examples", "noxfile.py"
    )


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy>=1.10", "exceptiongroup")
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    """Run the example pipeline (`nox -s demo -- --backend trio` for trio)."""
    session.install("-e", ".[trio,rich]")
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ with `mkdocs build --strict`."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against a lean anyio baseline; see benchmarks/README.md."""
    session.install("-e", ".[trio,uvloop]")
    session.run("python", "-m", "benchmarks", *session.posargs)
