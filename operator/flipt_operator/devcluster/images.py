"""What an image means on the local node, which has no container runtime and no registry.

A container runs on the host's own root file system (under an overlay, see container_launch), so an
image is only a name for an entrypoint and a default user:

- the operator's image (repository `flipt-operator`) is this package: its entrypoint
  `flipt-operator` is the console script of the interpreter running the node;
- Flipt's image (repository `flipt/flipt`) would be the Flipt binary, which cannot be built here:
  `/flipt` runs `flipt_standin` (a stand-in, named so, that only answers health checks);
- any other image runs its `command` as found on the host (a Job's `sh -c ...`, say); it has no
  entrypoint of its own, so such a container must give a command.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

OPERATOR_REPOSITORY = "flipt-operator"
FLIPT_REPOSITORIES = ("flipt/flipt", "flipt-io/flipt")


class ImageError(ValueError):
    """The container cannot run on the local node (no command for an unknown image)."""


def repository(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name


@dataclass(frozen=True)
class ImageMap:
    operator_entrypoint: tuple[str, ...]
    flipt_entrypoint: tuple[str, ...]

    @classmethod
    def for_this_interpreter(cls) -> ImageMap:
        python = sys.executable
        return cls(
            operator_entrypoint=(str(Path(python).with_name("flipt-operator")),),
            flipt_entrypoint=(python, "-m", "flipt_operator.devcluster.flipt_standin"),
        )

    def kind(self, image: str) -> str:
        repo = repository(image)
        if repo.rsplit("/", 1)[-1] == OPERATOR_REPOSITORY:
            return "operator"
        if any(repo == r or repo.endswith("/" + r) for r in FLIPT_REPOSITORIES):
            return "flipt"
        return "host"

    def default_user(self, image: str) -> tuple[int, int]:
        """The image's USER: the operator's Dockerfile says 10001, Flipt's image runs as flipt (100)."""
        return {"operator": (10001, 10001), "flipt": (100, 1000)}.get(self.kind(image), (0, 0))

    def command(self, image: str, command: list[str], args: list[str]) -> list[str]:
        """The process to run, by Kubernetes' rule: `command` replaces the entrypoint, `args` the
        image's default arguments."""
        kind = self.kind(image)
        if kind == "operator":
            entrypoint, default_args = ["flipt-operator"], ["run"]
        elif kind == "flipt":
            entrypoint, default_args = ["/flipt"], []
        else:
            entrypoint, default_args = [], []
        argv = (list(command) + list(args)) if command else (entrypoint + (list(args) if args else default_args))
        if not argv:
            raise ImageError(f"image {image!r} has no entrypoint on the local node: give the container a command")
        if kind == "operator" and argv[0] == "flipt-operator":
            return [*self.operator_entrypoint, *argv[1:]]
        if kind == "flipt" and argv[0] == "/flipt":
            return [*self.flipt_entrypoint, *argv[1:]]
        return argv
