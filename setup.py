"""What pyproject.toml cannot say by itself: one console script per command module, and the
configs of `conf/` inside the package.

`flexseg/commands/<name>.py` (a name not starting with `_`) is the command `flexseg-<name>`
(`_` becomes `-`), so that adding a command is its module and its config file. `conf/` at the
top of the repository ships as `flexseg/conf/` in the wheel, where an installed flexseg finds
it (`flexseg.commands._compose.conf_dir`); nothing is copied in the clone.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

ROOT = Path(__file__).resolve().parent
COMMANDS = sorted(p.stem for p in (ROOT / "flexseg" / "commands").glob("[!_]*.py"))
# conf/ and each of its folders, as data packages of flexseg.conf
CONF = ["flexseg.conf", *(f"flexseg.conf.{p}" for p in find_namespace_packages(str(ROOT / "conf")))]

setup(
    packages=[*find_namespace_packages(str(ROOT), include=["flexseg", "flexseg.*"]), *CONF],
    package_dir={"flexseg.conf": "conf"},
    package_data={"flexseg": ["sample_data/**/*"], **{name: ["*.yaml"] for name in CONF}},
    entry_points={
        "console_scripts": [
            f"flexseg-{name.replace('_', '-')} = flexseg.commands.{name}:main" for name in COMMANDS
        ]
    },
)
