"""Reading triples: tab-separated lines, N-Triples/Turtle through rdflib, and the JSON shape of
the kge-server API. Errors name every bad line so a client can fix its file in one go."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Triple = tuple[str, str, str]
MAX_REPORTED = 50


class TriplesError(ValueError):
    """Some lines are not triples; `lines` holds (line number, reason) pairs, 1-based."""

    def __init__(self, lines: list[tuple[int, str]]) -> None:
        self.lines = lines
        shown = "; ".join(f"line {n}: {why}" for n, why in lines[:MAX_REPORTED])
        more = f" (and {len(lines) - MAX_REPORTED} more)" if len(lines) > MAX_REPORTED else ""
        super().__init__(f"{len(lines)} malformed line(s): {shown}{more}")


def _clean(term: str) -> str:
    term = term.strip()
    if term.startswith("<") and term.endswith(">"):
        term = term[1:-1]
    return term


def parse_tsv(text: str) -> list[Triple]:
    """Triples from `subject<TAB>predicate<TAB>object` lines (blank and `#` lines skipped)."""
    found: list[Triple] = []
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [_clean(p) for p in line.split("\t")]
        if len(parts) != 3:
            bad.append((number, f"expected 3 tab-separated terms, found {len(parts)}"))
        elif not all(parts):
            bad.append((number, "empty term"))
        elif any(any(c in p for c in "\r\n") for p in parts):
            bad.append((number, "line break inside a term"))
        else:
            found.append((parts[0], parts[1], parts[2]))
    if bad:
        raise TriplesError(bad)
    return found


def parse_json(items: Any) -> list[Triple]:
    """Triples from `[{"subject":{"value"},"predicate":{"value"},"object":{"value"}}, ...]`;
    the item index (1-based) stands in for the line number in errors."""
    if not isinstance(items, list):
        raise TriplesError([(0, '"triples" must be a list')])
    found: list[Triple] = []
    bad: list[tuple[int, str]] = []
    for number, item in enumerate(items, 1):
        terms: list[str] = []
        for part in ("subject", "predicate", "object"):
            node = item.get(part) if isinstance(item, dict) else None
            value = node.get("value") if isinstance(node, dict) else node
            if not isinstance(value, str) or not _clean(value) or "\t" in value or "\n" in value:
                bad.append((number, f"{part} must be {{'value': <non-empty string>}}"))
                break
            terms.append(_clean(value))
        else:
            found.append((terms[0], terms[1], terms[2]))
    if bad:
        raise TriplesError(bad)
    return found


LABELS = (
    "http://www.w3.org/2000/01/rdf-schema#label",
    "http://www.w3.org/2004/02/skos/core#prefLabel",
)


class Collector:
    """Gathers rdflib terms `(s, p, o)` the way every import does: entity-to-entity triples
    kept, a literal object turned into the subject's label when the predicate is
    `rdfs:label`/`skos:prefLabel` (English or untagged preferred), other literals counted."""

    def __init__(self) -> None:
        self.triples: list[Triple] = []
        self.literals = 0
        self._labels: dict[str, tuple[int, str]] = {}

    def add(self, s: Any, p: Any, o: Any) -> None:
        import rdflib

        if not isinstance(o, rdflib.Literal):
            self.triples.append((str(s), str(p), str(o)))
            return
        self.literals += 1
        if str(p) in LABELS and str(o).strip():
            rank = 0 if o.language in (None, "en") else 1  # English/untagged first
            if str(s) not in self._labels or rank < self._labels[str(s)][0]:
                self._labels[str(s)] = (rank, str(o).strip()[:500])

    @property
    def labels(self) -> dict[str, str]:
        return {entity: label for entity, (_, label) in sorted(self._labels.items())}


def parse_rdf(text: str, fmt: str) -> tuple[list[Triple], dict[str, str], int]:
    """Entity triples of an N-Triples (`nt`) or Turtle document, the entities' labels and how
    many literal-object triples were left out of the graph (see `Collector`). Bad N-Triples
    lines are all reported."""
    import rdflib

    graph = rdflib.Graph()
    try:
        graph.parse(data=text, format=fmt)
    except Exception as exc:  # rdflib's parsers raise several unrelated types
        if fmt == "nt":  # line-based: find every bad line, not just the first
            raise TriplesError(_bad_nt_lines(text) or [(0, _first(exc))]) from None
        raise TriplesError([(0, f"not valid {fmt}: {_first(exc)}")]) from None
    found = Collector()
    for s, p, o in graph:
        found.add(s, p, o)
    found.triples.sort()
    return found.triples, found.labels, found.literals


def to_tsv(triples: Iterable[Sequence[str]]) -> str:
    return "".join(f"{s}\t{p}\t{o}\n" for s, p, o in triples)


def _first(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def _bad_nt_lines(text: str) -> list[tuple[int, str]]:
    import rdflib

    bad: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            rdflib.Graph().parse(data=line, format="nt")
        except Exception as exc:  # as in parse_rdf
            bad.append((number, _first(exc)))
    return bad
