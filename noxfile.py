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
    """ruff (rules and format) and codespell over everything in the repository."""
    session.install("ruff>=0.6", "codespell>=2.2")
    session.run("ruff", "check", "proxima", "tests", "benchmarks", "examples", "noxfile.py")
    session.run(
        "ruff", "format", "--check", "proxima", "tests", "benchmarks", "examples", "noxfile.py"
    )
    session.run("codespell")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the files [tool.mypy] in pyproject.toml lists."""
    session.install("-e", ".[test]", "mypy>=1.10", "exceptiongroup")
    session.run("mypy")


@nox.session
def coverage(session: nox.Session) -> None:
    """The suite under branch coverage: the whole library, then the engine alone."""
    session.install("-e", ".[test]", "coverage[toml]>=7.10")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report")
    session.run(
        "coverage",
        "report",
        "--include=proxima/data/pipeline/_engine/*",
        "--no-skip-covered",
    )


@nox.session
def verifytypes(session: nox.Session) -> None:
    """How completely the public API is typed (pyright's "completeness score").

    A report, not a gate: pyright exits 1 below 100 %, which the session
    accepts. It runs outside the source tree, so that pyright checks the
    installed package (in the tree it finds the folder, not the package).
    """
    session.install("-e", ".", "pyright>=1.1.380")
    with session.chdir(session.create_tmp()):
        session.run("pyright", "--verifytypes", "proxima", "--ignoreexternal", success_codes=[0, 1])


@nox.session
def demo(session: nox.Session) -> None:
    """Run the example pipeline through the command line, recording the run in
    the SQLite store .proxima/demo.db (`nox -s demo -- --backend trio` for trio).

    The run ends PARTIALLY_COMPLETED on purpose (an optional stage times out),
    which is exit status 3; anything else fails the session.
    """
    session.install("-e", ".[cli,trio]")
    store = ".proxima/demo.db"
    target = "examples/demo.py:build_pipeline"
    session.run("proxima", "run", target, "--store", store, *session.posargs, success_codes=[3])
    session.run("proxima", "runs", "--store", store, "--limit", "5")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ with `mkdocs build --strict`."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against a lean anyio baseline; see benchmarks/README.md."""
    session.install("-e", ".[trio,uvloop,dask]")  # dask: the executors suite
    session.run("python", "-m", "benchmarks", *session.posargs)
