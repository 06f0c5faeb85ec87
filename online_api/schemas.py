"""Request and response models of the API (they are the OpenAPI schema, examples included)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, WithJsonSchema

from streamrec.events import ID_PATTERN as ID_PATTERN  # re-exported: the routes' query ids follow it too
from streamrec.events import MAX_ID_LEN

# The collector's bodies (Event, EventBatch) are msgspec Structs read by the contract's decoder: see
# online_api.ingest, which also puts their schemas into the OpenAPI document.
MAX_EXCLUDE = 500
MAX_ATTRIBUTES = 32


def utf8_text(value: str) -> str:
    """``value`` if it can be written as UTF-8 (no lone UTF-16 surrogates), else ValueError.

    JSON's ``\\ud83d`` escapes decode to such strings; Redis, Kafka headers and logs cannot hold them.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (a lone UTF-16 surrogate is not)") from None
    return value


def _attribute_value(value: Any) -> str | int | float | bool | None:
    """A catalogue attribute: UTF-8 text, a finite number, a boolean or null; nothing is coerced."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number (NaN and Infinity are not JSON)")
        return value
    if isinstance(value, str):
        return utf8_text(value)
    raise ValueError("must be a string, number, boolean or null (attributes are flat)")


# A catalogue category follows the event contract's id rules (it names the same Redis keys).
CategoryId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN), AfterValidator(utf8_text)]
AttributeValue = Annotated[
    Any,
    BeforeValidator(_attribute_value),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"},
                              {"type": "null"}]}),
]


class Source(StrEnum):
    """Why an item is in a recommendation list."""

    PERSONAL = "personal"  # the user's factors (ALS scores) gave the largest weighted term
    COVISITATION = "covisitation"  # viewed with the session's last items ("viewed this, also viewed")
    REPEAT = "repeat"  # the user's own decayed frequent items ("buy again")
    TRENDING = "trending"  # trending in the last hour
    POPULAR = "popular"  # all-time popular
    CONTENT = "content"  # new since the refit, with catalogue content like the user's history ("new arrivals")


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(description="the hybrid's blended score Σ weight·feature (each source divided by its "
                         "best candidate's score; ALS-only path: the blend in [0, 1])")
    source: Source = Field(description="the signal with the largest weighted term: personal, covisitation, "
                           "repeat, trending or popular")


class Recommendations(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "user_id": "u-1842", "model_version": "v20261122T101500123", "vector_age_s": 4.2,
        "personalized": True,
        "items": [{"item_id": "sku-77", "score": 0.93, "source": "personal"},
                  {"item_id": "sku-12", "score": 0.41, "source": "trending"}]}]})

    user_id: str
    model_version: str | None = Field(description="the model version that served; null before the first")
    vector_age_s: float | None = Field(description="seconds since the user's vector was last computed (by "
                                       "a fold-in, or the fit of the model version); null when the user has none")
    personalized: bool = Field(description="true when a user signal (personal, covisitation, repeat) is the "
                               "source of at least one item; false for a trending/popular answer")
    items: list[RecommendedItem]


MAX_SESSION_ITEMS = 50
SessionItemId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN),
                          AfterValidator(utf8_text)]


class SessionIn(BaseModel):
    """A visitor's recent items, for ``POST /v1/recommendations``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "items": ["sku-12", "sku-77"], "user_id": None, "k": 10, "exclude": []}]})

    items: list[SessionItemId] = Field(min_length=1, max_length=MAX_SESSION_ITEMS,
                                       description=f"recent item ids, newest last (1 to {MAX_SESSION_ITEMS})")
    user_id: SessionItemId | None = Field(None, description="the visitor's user id, when known: their history "
                                          "and vector count too")
    k: int = Field(10, ge=1, description="how many items (1 to max_k)")
    exclude: list[SessionItemId] = Field(default_factory=list, max_length=MAX_EXCLUDE,
                                         description="item ids to leave out")


class SessionRecommendations(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "user_id": "", "model_version": "v20261122T101500123", "vector_age_s": 0.0, "personalized": True,
        "items": [{"item_id": "sku-78", "score": 1.2, "source": "covisitation"}]}]})

    user_id: str = Field(description="the request's user_id, empty for an anonymous visitor")
    model_version: str | None
    vector_age_s: float | None = Field(description="0: the session's vector is folded in for this request; "
                                       "null when none of its items is in the model")
    personalized: bool
    items: list[RecommendedItem]


# The hot path builds these plain values instead of the models above (a pydantic model per item and the
# response-model validation cost more CPU than scoring 50,000 items); the bytes are the same schema.
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class Ranked(NamedTuple):
    """One item of a recommendation list (a :class:`RecommendedItem` as a plain tuple)."""

    item_id: str
    score: float
    source: Source


@dataclass(frozen=True, slots=True)
class RecommendationList:
    """A recommendations answer as plain data; :meth:`to_json` is its :class:`Recommendations` JSON."""

    user_id: str
    model_version: str | None
    vector_age_s: float | None
    personalized: bool
    items: list[Ranked]

    def to_json(self) -> bytes:
        """The answer body, UTF-8 JSON in the field order of :class:`Recommendations`."""
        return _encode_json({
            "user_id": self.user_id, "model_version": self.model_version, "vector_age_s": self.vector_age_s,
            "personalized": self.personalized,
            "items": [{"item_id": i, "score": s, "source": src} for i, s, src in self.items]}).encode()


class SimilarItem(BaseModel):
    item_id: str
    score: float = Field(description="factors: cosine similarity in [-1, 1]; covisitation: the decayed "
                         "co-visitation weight now; blend: the weighted sum of both, each divided by its best; "
                         "content: cosine similarity of the content features in (0, 1]")


class SimilarItems(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "item_id": "sku-77", "kind": "blend", "model_version": "v20261122T101500123",
        "items": [{"item_id": "sku-78", "score": 1.87}]}]})

    item_id: str
    kind: str = Field(description="covisitation, factors, blend or content")
    model_version: str | None = Field(description="the model version whose factors served; null without a model")
    items: list[SimilarItem]


class Contribution(BaseModel):
    item_id: str = Field(description="an item from the user's history")
    weight: float = Field(description="the user's summed interaction weight on it")
    contribution: float = Field(description="its share of the predicted score")


class Explanation(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "user_id": "u-1842", "item_id": "sku-77", "model_version": "v20261122T101500123", "score": 0.91,
        "contributions": [{"item_id": "sku-70", "weight": 6.0, "contribution": 0.55}]}]})

    user_id: str
    item_id: str
    model_version: str
    score: float = Field(description="the item's predicted score from the user's history")
    contributions: list[Contribution] = Field(description="the history items that contributed most, best first")


class TrendingItem(BaseModel):
    item_id: str
    score: float = Field(description="decayed interaction weight in the window")


class Trending(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "window": "1h", "category": None, "items": [{"item_id": "sku-12", "score": 41.5}]}]})

    window: str
    category: str | None
    items: list[TrendingItem]


class Accepted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "accepted": 1, "event_ids": ["0b7e4f0c-3c57-4c43-9d0e-2f1f5a2b9c11"]}]})

    accepted: int = Field(description="events written to Kafka (acknowledged by every in-sync replica)")
    event_ids: list[str]


class ItemIn(BaseModel):
    """Catalogue metadata of one item."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "category": "shoes", "available": True,
        "attributes": {"title": "Trail runner", "brand": "acme", "price": 49.0, "tags": "waterproof,vegan"}}]})

    category: CategoryId | None = None
    available: StrictBool = Field(True, description="unavailable items never appear in any answer")
    # Values as strict as the event context: UTF-8 text, finite numbers, booleans, null; nothing coerced.
    attributes: dict[Annotated[str, Field(max_length=64), AfterValidator(utf8_text)], AttributeValue] = Field(
        default_factory=dict, max_length=MAX_ATTRIBUTES,
        description="free-form flat attributes; keys other than item_id, category and available. For cold start "
        "(content features): title, name and description are free text, tags a comma-separated list, other text "
        "and booleans categories (brand, ...), numbers binned (price, ...)")


class ProfileIn(BaseModel):
    """A user's profile: typed, flat attributes (text, numbers, booleans, null), e.g. age band and region."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "attributes": {"age_band": "25-34", "segment": "family", "region": "north", "household_size": 3}}]})

    attributes: dict[Annotated[str, Field(min_length=1, max_length=64), AfterValidator(utf8_text)],
                     AttributeValue] = Field(
        max_length=MAX_ATTRIBUTES, description="text and booleans are categorical, numbers are binned")


class Profile(BaseModel):
    user_id: str
    attributes: dict[str, Any]


class UserDeleted(BaseModel):
    user_id: str
    removed: dict[str, int] = Field(description="what was removed: profile, history, event_count (0 or 1 each), "
                                    "vectors (one per model version), pending (entries in new items' pending "
                                    "interactions)")


class Item(BaseModel):
    item_id: str
    category: str | None
    available: bool
    attributes: dict[str, Any]


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine code, e.g. not_found, invalid_input, unavailable")
    message: str
    fields: list[dict[str, str]] = Field(description="field-level problems: {field, message}")


class ErrorBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"error": {
        "code": "invalid_input", "message": "query.k: Input should be less than or equal to 100",
        "fields": [{"field": "query.k", "message": "Input should be less than or equal to 100"}]}}]})

    error: ErrorDetail


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    redis: bool
    model_version: str | None


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the error body for ``statuses``."""
    text = {400: "Malformed request", 401: "API key missing", 403: "API key wrong", 404: "Not found",
            413: "Body too large", 422: "Invalid input (field-level messages)",
            503: "A dependency is unavailable; retry after Retry-After seconds"}
    return {s: {"model": ErrorBody, "description": text.get(s, "Error")} for s in statuses}
