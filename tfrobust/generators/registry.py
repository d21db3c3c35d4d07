"""Generators by name (`tfrobust generate --generator NAME`): a plain dict, no dynamic imports."""

from __future__ import annotations

from tfrobust.errors import UserError
from tfrobust.generators.base import Generator
from tfrobust.generators.gaussian import GaussianGenerator

GENERATORS: dict[str, type[Generator]] = {
    GaussianGenerator.name: GaussianGenerator,
}


def make_generator(name: str) -> Generator:
    if name not in GENERATORS:
        raise UserError(f"unknown generator {name!r}; choose from: {', '.join(GENERATORS)}")
    return GENERATORS[name]()
