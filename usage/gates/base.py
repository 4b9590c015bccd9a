from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gate:
    """One mediation gate as DuckDB SQL (parameters as `$name`, from `params`).

    `steps` are SELECT lists with joins: each becomes `SELECT s.*, <select> FROM <previous> s <joins>`,
    so a gate only adds columns (names starting with `_` are scratch and never stored). `ok` says,
    over the gate's output, whether the record passed; `reason` and `message` say why it did not.
    `produces` are the record columns the gate sets: a chain that starts at this gate recomputes them.
    A step whose select list is `@name` defines a side table `name` (its joins are the query, which
    may read `{prev}`) for later steps to join, without adding columns.
    `counters` are what the gate's records add to their period's counters (`PeriodCounter`): tuples
    of (kind, owner column, ref column, quantity column) over the gate's output.
    """

    name: str
    produces: tuple[str, ...]
    steps: tuple[tuple[str, str], ...]  # (select list, joins)
    ok: str
    reason: str
    message: str
    params: dict = field(default_factory=dict)
    counters: tuple[tuple[str, str, str, str], ...] = ()
