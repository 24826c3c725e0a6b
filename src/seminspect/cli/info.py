"""``seminspect version`` and ``seminspect taxonomy``: what is installed and how labels are organised."""

from __future__ import annotations

import typer
from rich.tree import Tree

from seminspect.cli._common import console


def version() -> None:
    """Print the seminspect version."""
    from seminspect import __version__

    console.print(f"seminspect {__version__}")


def taxonomy(
    name: str = typer.Argument("sem_default", help="Built-in taxonomy name or a YAML file."),
) -> None:
    """Show a defect category tree (levels, families, leaf types)."""
    from seminspect.data.taxonomy import Taxonomy, builtin_taxonomies

    tax = Taxonomy.load(name)
    root = Tree(f"[bold]{tax.name}[/] (levels: {' > '.join(tax.levels)}; {tax.num_leaves} types)")
    nodes: dict[tuple[str, ...], Tree] = {(): root}
    for path in tax.paths:
        for depth in range(1, len(path) + 1):
            key = path[:depth]
            if key not in nodes:
                nodes[key] = nodes[path[: depth - 1]].add(key[-1])
    console.print(root)
    console.print(f"built-in taxonomies: {', '.join(builtin_taxonomies())}")


def register(app: typer.Typer) -> None:
    app.command("version")(version)
    app.command("taxonomy")(taxonomy)
