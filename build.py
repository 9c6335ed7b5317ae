"""Build the Blender extension zip: ``python build.py`` -> ``dist/<id>-<version>.zip``.

The zip holds, at its root, the files of ``occupancy_addon/`` (so ``__init__.py`` is at the top),
``blender_manifest.toml``, ``LICENSE`` and the whole ``backend/`` package with its weights. The files
are staged in a temporary folder and packed by Blender's own extension tool, which ships inside the
``bpy`` module (``bpy/<version>/scripts/addons_core/bl_pkg/cli/blender_ext.py``); the zip is then
checked with that tool's ``validate``. Without ``bpy`` installed the zip is written with zipfile
and left unvalidated, with a warning.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON_DIR = ROOT / "occupancy_addon"
BACKEND_DIR = ROOT / "backend"
MANIFEST = ROOT / "blender_manifest.toml"
LICENSE = ROOT / "LICENSE"

# Build output, caches and tests never go into the extension.
EXCLUDED_DIRS = {"__pycache__", "tests", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo"}


class BuildError(RuntimeError):
    pass


def _tree(folder: Path) -> Iterator[Path]:
    """Files under ``folder`` that belong in the extension, in a stable order."""
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            if path.name not in EXCLUDED_DIRS:
                yield from _tree(path)
        elif path.is_file() and path.suffix not in EXCLUDED_SUFFIXES:
            yield path


def package_files() -> dict[str, Path]:
    """Map each path inside the zip (forward slashes) to the source file."""
    files: dict[str, Path] = {"blender_manifest.toml": MANIFEST, "LICENSE": LICENSE}
    for path in _tree(ADDON_DIR):
        name = path.relative_to(ADDON_DIR).as_posix()
        if name in files or name.split("/")[0] == "backend":
            raise BuildError(f"occupancy_addon/{name} would overwrite a packaged file of the same name")
        files[name] = path
    if not (BACKEND_DIR / "__init__.py").is_file():
        raise BuildError(f"backend package not found at {BACKEND_DIR}")
    for path in _tree(BACKEND_DIR):
        files["backend/" + path.relative_to(BACKEND_DIR).as_posix()] = path
    return files


def zip_name() -> str:
    manifest = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    return f"{manifest['id']}-{manifest['version']}.zip"


def find_blender_ext() -> Path | None:
    """Blender's extension tool inside the installed ``bpy`` module, found without importing bpy
    (which would start Blender)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        tools = sorted(Path(location).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if tools:
            return tools[-1]
    return None


def _run_tool(tool: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, str(tool), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"blender_ext.py {args[0]} failed:\n{done.stdout}{done.stderr}".rstrip())


def validate_zip(path: Path, tool: Path) -> None:
    """Raise BuildError unless Blender's extension tool accepts the zip at ``path``."""
    _run_tool(tool, "validate", str(path))


def stage(files: dict[str, Path], folder: Path) -> None:
    for name, source in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def write_plain_zip(files: dict[str, Path], output: Path) -> None:
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, source in files.items():
            archive.write(source, name)


def build(output_dir: Path) -> Path:
    """Write the extension zip into ``output_dir`` and return its path."""
    files = package_files()
    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / zip_name()
    output.unlink(missing_ok=True)
    tool = find_blender_ext()
    if tool is None:
        print(
            "warning: bpy is not installed, so the zip is packed with zipfile and NOT validated "
            "by Blender's extension tool",
            file=sys.stderr,
        )
        write_plain_zip(files, output)
        return output
    with tempfile.TemporaryDirectory(prefix="occ-build-") as staging:
        stage(files, Path(staging))
        _run_tool(tool, "build", "--source-dir", staging, "--output-filepath", str(output))
    validate_zip(output, tool)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", type=Path, default=ROOT / "dist", help="default: dist/")
    args = parser.parse_args(argv)
    try:
        output = build(args.output_dir)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
