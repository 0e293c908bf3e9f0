"""Request and response bodies of the service, and the bounds every input is checked against at the edge.

Numbers are finite (no NaN, no infinity), item ids fit in int64, timestamps lie in years 1..9999 (so every stored one
can be written back as a date), strings are valid UTF-8 (no lone surrogate such as ``"\\ud800"``) and every list and
string has a length bound. What depends on the server's flags (``--max-k``, ``--max-history``, the loaded models)
is built per app by :func:`request_schemas`, so the OpenAPI spec states the bounds this server enforces.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, Field, StrictInt, create_model, model_validator

from dualrec.serve.limits import Limits

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EPOCH_MIN, EPOCH_MAX = -62135596800.0, 253402300799.0  # 0001-01-01 and 9999-12-31T23:59:59, UTC
USER_ID_PATTERN = r"^[A-Za-z0-9_.@:\-]{1,128}$"
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"  # printable ASCII, no space


def _valid_utf8(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid UTF-8 text (it holds a lone surrogate such as \\ud800)") from None
    return text


Utf8Text = Annotated[str, AfterValidator(_valid_utf8)]
ItemId = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX, examples=[1193])]
Title = Annotated[Utf8Text, Field(min_length=1, max_length=300, examples=["One Flew Over the Cuckoo's Nest"])]
EpochSeconds = Annotated[float, Field(ge=EPOCH_MIN, le=EPOCH_MAX, allow_inf_nan=False)]


class EventIn(BaseModel):
    """One watch event: exactly one of ``item`` (catalog id) or ``title`` (free text, grounded)."""

    item: ItemId | None = None
    title: Title | None = None
    timestamp: datetime | EpochSeconds | None = Field(
        None, description="Epoch seconds or ISO 8601 (UTC without an offset), years 1..9999; default: when the "
                          "server receives it.")

    @model_validator(mode="after")
    def _one_reference(self):
        if (self.item is None) == (self.title is None):
            raise ValueError("give exactly one of 'item' or 'title'")
        return self


class ItemOut(BaseModel):
    rank: int
    item: int
    title: str
    year: int | None
    genres: list[str]
    score: float


class StoredEventOut(BaseModel):
    item: int
    title: str | None = Field(description="None when the model's catalog lacks the item (see `known`).")
    year: int | None = None
    genres: list[str] = []
    timestamp: float | None
    known: bool = Field(True, description="False for a stored item the current model's catalog lacks (stored "
                                          "under an earlier model); such events are left out of rankings.")


class EventsOut(BaseModel):
    user: str
    stored: int
    history_length: int
    events: list[StoredEventOut]
    replayed: bool = False


class HistoryOut(BaseModel):
    user: str
    events: list[StoredEventOut]


class RecommendationsOut(BaseModel):
    model: str
    items: list[ItemOut]
    history_length: int
    ignored_items: int = Field(0, description="Stored events left out: their items are not in the model's catalog.")
    lstm_suggestion: str | None = Field(None, description="DUALRec: the LSTM's suggestion put in the prompt.")
    llm_text: str | None = Field(None, description="DUALRec: what the LLM wrote.")
    fallback: bool = Field(False, description="True when the answer is the LSTM ranking instead of DUALRec's.")
    fallback_reason: str | None = None
    batch_size: int = Field(description="Requests answered by the same model call.")
    timings_ms: dict[str, float]
    user: str | None = None


RunPath = Annotated[Utf8Text, Field(min_length=1, max_length=4096)]


class ReloadIn(BaseModel):
    """Run folders to load; a missing one is re-read from where the server loaded it."""

    model: RunPath | None = Field(None, description="Run folder of the ranker (`--model`).")
    dualrec: RunPath | None = Field(None, description="Run folder of the DUALRec hybrid (`--dualrec`).")


class ReloadOut(BaseModel):
    models: dict[str, str]
    catalog_items: int
    canary: str


@dataclass(frozen=True)
class RequestSchemas:
    """The bodies and query types whose bounds come from this server's flags and loaded models."""

    events_in: type[BaseModel]
    history_in: type[BaseModel]
    model_name: Any        # Literal of the loaded models' names
    model_doc: str


def request_schemas(limits: Limits, model_names: tuple[str, ...]) -> RequestSchemas:
    """The spec's ``model`` enum lists the loaded models only: asking for one this server lacks is a plain 422."""
    model_name = Literal[model_names]
    model_doc = ("Which model ranks: " + ", ".join(model_names) +
                 ("" if "dualrec" in model_names else " (dualrec needs `dualrec serve --dualrec RUN`)"))
    events_in = create_model("EventsIn", events=(list[EventIn], Field(min_length=1,
                                                                      max_length=limits.max_events_per_post)))
    history_in = create_model(
        "HistoryIn",
        history=(list[Union[ItemId, Title]], Field(
            default_factory=list, max_length=limits.max_history,
            description="Watched items oldest first: catalog ids (numbers) or titles (strings).")),
        k=(StrictInt, Field(10, ge=1, le=limits.max_k)),
        model=(model_name, Field(model_names[0], description=model_doc)))
    return RequestSchemas(events_in, history_in, model_name, model_doc)
