"""CT1 and CT13 filters: parsing (R4), the SQL they become, and their canonical form (R2).

Comma lists arrive as strings (a repeated parameter adds to the list). Everything a
client can get wrong is a 422 naming the parameter. The canonical form sorts every list
and fills every default, so two spellings of one question share one cache entry.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import sqlalchemy as sa

from models.anime.catalog.text import like_escape, query_tokens
from models.anime.catalog_tables import KINDS, RATINGS, STATUSES, anime, anime_genre, anime_studio
from server.errors import ApiError, Code, FieldError

YEAR_MIN, YEAR_MAX = 1917, 2100
MAX_GENRES = 20
MAX_STUDIOS = 10
MAX_IDS = 50
MAX_PAGE, MAX_LIMIT, MAX_OFFSET_ITEMS = 500, 50, 10_000
MAX_ID = 2**31 - 1
ORDERS = ("ranked", "popularity", "name", "aired_on", "episodes", "random")
SEASON_NAMES = ("winter", "spring", "summer", "fall")

_SEASON = re.compile(r"^(winter|spring|summer|fall)_(\d{4})$")
_YEAR = re.compile(r"^\d{4}$")
_YEARS = re.compile(r"^(\d{4})_(\d{4})$")
_DECADE = re.compile(r"^(\d{3})x$")
_SCORE = re.compile(r"^\d{1,2}(\.\d{1,2})?$")
_DIGITS = re.compile(r"^[0-9]{1,10}$")


def bad(field: str, message: str) -> ApiError:
    return ApiError(
        Code.validation_failed, f"{field}: {message}", errors=[FieldError(field, message)]
    )


@dataclasses.dataclass(frozen=True)
class EnumFilter:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def canonical(self) -> str:
        return ",".join([*self.include, *("!" + v for v in self.exclude)])


@dataclasses.dataclass(frozen=True)
class YearSpan:
    """A season value: one named season (`winter_2024`) or an inclusive span of years."""

    season: str | None = None
    year_from: int = 0
    year_to: int = 0

    def condition(self) -> sa.ColumnElement[bool]:
        if self.season is not None:
            return anime.c.season == self.season
        if self.year_from == self.year_to:
            return anime.c.year == self.year_from
        return anime.c.year.between(self.year_from, self.year_to)


@dataclasses.dataclass(frozen=True)
class Filters:
    """Everything CT1 filters on; CT13 uses the same minus `q`."""

    q: str | None = None  # normalised
    tokens: tuple[str, ...] = ()
    kind: EnumFilter = EnumFilter()
    status: EnumFilter = EnumFilter()
    rating: EnumFilter = EnumFilter()
    season_include: tuple[str, ...] = ()  # raw canonical values, sorted
    season_exclude: tuple[str, ...] = ()
    year_from: int | None = None
    year_to: int | None = None
    score_x100: int = 0
    genre_include: tuple[int, ...] = ()
    genre_exclude: tuple[int, ...] = ()
    studio: tuple[int, ...] = ()
    ids: tuple[int, ...] = ()
    censored: bool = True

    def canonical(self) -> str:
        parts = {
            "censored": "1" if self.censored else "0",
            "genre": ",".join(
                [*map(str, self.genre_include), *("!" + str(g) for g in self.genre_exclude)]
            ),
            "ids": ",".join(map(str, self.ids)),
            "kind": self.kind.canonical(),
            "q": self.q or "",
            "rating": self.rating.canonical(),
            "score": str(self.score_x100),
            "season": ",".join([*self.season_include, *("!" + s for s in self.season_exclude)]),
            "status": self.status.canonical(),
            "studio": ",".join(map(str, self.studio)),
            "year_from": str(self.year_from or ""),
            "year_to": str(self.year_to or ""),
        }
        return "&".join(f"{key}={value}" for key, value in sorted(parts.items()))

    def conditions(self, dialect: str) -> list[sa.ColumnElement[bool]]:
        """The WHERE clauses. Built afresh on every call: `databases` binds positionally and
        mishandles one bind parameter object appearing twice in a statement."""
        where: list[sa.ColumnElement[bool]] = []
        for token in self.tokens:
            where.append(anime.c.search_text.like(f"%{like_escape(token)}%", escape="\\"))
        for column, enum in (
            (anime.c.kind, self.kind),
            (anime.c.status, self.status),
            (anime.c.rating, self.rating),
        ):
            if enum.include:
                where.append(column.in_(enum.include))
            if enum.exclude:
                where.append(sa.or_(column.is_(None), column.not_in(enum.exclude)))
        if self.censored:
            where.append(sa.or_(anime.c.rating.is_(None), anime.c.rating != "rx"))
        if self.season_include:
            where.append(sa.or_(*(parse_season(v).condition() for v in self.season_include)))
        for value in self.season_exclude:
            span = parse_season(value)
            column = anime.c.season if span.season is not None else anime.c.year
            where.append(sa.or_(column.is_(None), sa.not_(span.condition())))
        if self.year_from is not None:
            where.append(anime.c.year >= self.year_from)
        if self.year_to is not None:
            where.append(anime.c.year <= self.year_to)
        if self.score_x100 > 0:
            where.append(anime.c.score_x100 >= self.score_x100)
        if self.genre_include:
            having = (
                sa.select(anime_genre.c.anime_id)
                .where(anime_genre.c.genre_id.in_(self.genre_include))
                .group_by(anime_genre.c.anime_id)
                .having(sa.func.count() == len(self.genre_include))
            )
            where.append(anime.c.id.in_(having))
        if self.genre_exclude:
            where.append(
                anime.c.id.not_in(
                    sa.select(anime_genre.c.anime_id).where(
                        anime_genre.c.genre_id.in_(self.genre_exclude)
                    )
                )
            )
        if self.studio:
            where.append(
                anime.c.id.in_(
                    sa.select(anime_studio.c.anime_id).where(
                        anime_studio.c.studio_id.in_(self.studio)
                    )
                )
            )
        if self.ids:
            where.append(anime.c.id.in_(self.ids))
        return where


def _values(raw: Sequence[str] | None) -> list[str]:
    """A comma list (or several): every item, stripped. An empty item is an error later."""
    if not raw:
        return []
    return [item.strip() for chunk in raw for item in chunk.split(",")]


def parse_enum(field: str, raw: Sequence[str] | None, allowed: Sequence[str]) -> EnumFilter:
    include: set[str] = set()
    exclude: set[str] = set()
    for value in _values(raw):
        negated = value.startswith("!")
        name = value[1:] if negated else value
        if name not in allowed:
            raise bad(field, f"{value!r} is not one of {', '.join(allowed)} (or !value)")
        (exclude if negated else include).add(name)
    return EnumFilter(tuple(sorted(include)), tuple(sorted(exclude)))


def parse_season(value: str) -> YearSpan:
    """One season value; ValueError when malformed."""
    if match := _SEASON.match(value):
        year = int(match.group(2))
        if YEAR_MIN <= year <= YEAR_MAX:
            return YearSpan(season=value)
    elif _YEAR.match(value):
        year = int(value)
        if YEAR_MIN <= year <= YEAR_MAX:
            return YearSpan(year_from=year, year_to=year)
    elif match := _YEARS.match(value):
        first, last = int(match.group(1)), int(match.group(2))
        if YEAR_MIN <= first <= last <= YEAR_MAX:
            return YearSpan(year_from=first, year_to=last)
    elif match := _DECADE.match(value):
        start = int(match.group(1)) * 10
        if YEAR_MIN - 9 <= start <= YEAR_MAX:
            return YearSpan(year_from=start, year_to=start + 9)
    raise ValueError(value)


def parse_seasons(raw: Sequence[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    include: set[str] = set()
    exclude: set[str] = set()
    for value in _values(raw):
        negated = value.startswith("!")
        name = value[1:] if negated else value
        try:
            parse_season(name)
        except ValueError:
            raise bad(
                "season",
                f"{value!r} is not a season: winter_2024, 2024, 2020_2024 or 199x "
                f"(years {YEAR_MIN}..{YEAR_MAX}), optionally with !",
            ) from None
        (exclude if negated else include).add(name)
    return tuple(sorted(include)), tuple(sorted(exclude))


def parse_ids(
    field: str, raw: Sequence[str] | None, maximum: int, *, negatable: bool = False
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    include: set[int] = set()
    exclude: set[int] = set()
    values = _values(raw)
    if len(values) > maximum:
        raise bad(field, f"at most {maximum} ids")
    for value in values:
        negated = negatable and value.startswith("!")
        digits = value[1:] if negated else value
        if not (_DIGITS.match(digits) and 0 < int(digits) <= MAX_ID):
            raise bad(field, f"{value!r} is not an id" + (" (or !id)" if negatable else ""))
        (exclude if negated else include).add(int(digits))
    return tuple(sorted(include)), tuple(sorted(exclude))


def parse_score(raw: str | None) -> int:
    """Minimum score 0..10 with at most two decimals, as score_x100."""
    if raw is None:
        return 0
    value = raw.strip()
    if not _SCORE.match(value):
        raise bad("score", "a number 0..10 with at most two decimals")
    whole, _, fraction = value.partition(".")
    x100 = int(whole) * 100 + int((fraction + "00")[:2])
    if x100 > 1000:
        raise bad("score", "a number 0..10 with at most two decimals")
    return x100


def parse_filters(
    *,
    q: str | None = None,
    kind: Sequence[str] | None = None,
    status: Sequence[str] | None = None,
    rating: Sequence[str] | None = None,
    season: Sequence[str] | None = None,
    year_from: int | None = None,
    year_to: int | None = None,
    score: str | None = None,
    genre: Sequence[str] | None = None,
    studio: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    censored: bool = True,
) -> Filters:
    """R4: every bad value is a 422 naming its parameter."""
    if year_from is not None and year_to is not None and year_from > year_to:
        raise bad("year_from", "year_from must not be after year_to")
    normalized, tokens = query_tokens(q) if q is not None else (None, [])
    season_include, season_exclude = parse_seasons(season)
    genre_include, genre_exclude = parse_ids("genre", genre, MAX_GENRES, negatable=True)
    studios, _ = parse_ids("studio", studio, MAX_STUDIOS)
    id_list, _ = parse_ids("ids", ids, MAX_IDS)
    return Filters(
        q=normalized,
        tokens=tuple(tokens),
        kind=parse_enum("kind", kind, KINDS),
        status=parse_enum("status", status, STATUSES),
        rating=parse_enum("rating", rating, RATINGS),
        season_include=season_include,
        season_exclude=season_exclude,
        year_from=year_from,
        year_to=year_to,
        score_x100=parse_score(score),
        genre_include=genre_include,
        genre_exclude=genre_exclude,
        studio=studios,
        ids=id_list,
        censored=censored,
    )


def check_page(page: int, limit: int) -> None:
    if page * limit > MAX_OFFSET_ITEMS:
        raise bad("page", f"page × limit must be at most {MAX_OFFSET_ITEMS}")
