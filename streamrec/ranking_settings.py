"""The hybrid ranking's configuration from :class:`Settings`, and back to ``STREAMREC_*`` lines.

:class:`models.ranking.RankingConfig` and :class:`models.covisitation.CovisConfig` are pure dataclasses
(models/ reads no environment); this module maps the settings onto them, for the worker and the API,
and renders chosen configurations as environment lines (``streamrec eval --write-settings``).
"""

from __future__ import annotations

from models.cold_start import ColdStartConfig
from models.covisitation import CovisConfig
from models.ranking import RankingConfig
from streamrec.settings import Settings

RANK_FIELDS = {"personal": "rank_weight_personal", "covisitation": "rank_weight_covisitation",
               "repeat": "rank_weight_repeat", "trending": "rank_weight_trending", "popular": "rank_weight_popular",
               "content": "rank_weight_content", "arrival_slots": "rank_arrival_slots",
               "arrival_min_score": "rank_arrival_min_score", "ranker_min_history": "rank_model_min_history",
               "candidates": "rank_candidates", "exclude_seen": "rank_exclude_seen",
               "session_items": "session_items", "session_decay": "session_decay",
               "repeat_half_life_s": "repeat_half_life_s"}
COVIS_FIELDS = {"window_s": "covis_window_s", "max_prev": "covis_max_prev", "distance_decay": "covis_distance_decay",
                "purchase_factor": "covis_purchase_factor", "backward_weight": "covis_backward_weight",
                "half_life_s": "covis_half_life_s", "top_n": "covis_top_n"}


def ranking_config(settings: Settings) -> RankingConfig:
    """The blend weights and read-time signal parameters the API ranks with."""
    return RankingConfig(**{f: getattr(settings, s) for f, s in RANK_FIELDS.items()})


def covis_config(settings: Settings) -> CovisConfig:
    """How the worker pairs events and decays the pairs."""
    return CovisConfig(**{f: getattr(settings, s) for f, s in COVIS_FIELDS.items()})


def _env(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_lines(rank: RankingConfig, covis: CovisConfig) -> list[str]:
    """``STREAMREC_NAME=value`` lines of a ranking and a co-visitation configuration."""
    pairs = [(s, getattr(rank, f)) for f, s in RANK_FIELDS.items()]
    pairs += [(s, getattr(covis, f)) for f, s in COVIS_FIELDS.items()]
    # an unset (None) value is left out: the variable's absence is what means "none"
    return [f"STREAMREC_{s.upper()}={_env(v)}" if v is not None else f"# STREAMREC_{s.upper()} unset (none)"
            for s, v in pairs]


def cold_start_config(settings: Settings) -> ColdStartConfig:
    """The cold-start settings the refit, the worker and the API use, for the evaluation's replay."""
    return ColdStartConfig(
        items=settings.content_config(), profiles=settings.content_config(profiles=True),
        content_min_interactions=settings.content_min_interactions,
        content_ridge_alpha=settings.content_ridge_alpha,
        content_prior_interactions=settings.content_prior_interactions,
        content_neighbours=settings.rank_content_neighbours, neighbours_top_n=settings.covis_top_n,
        profile_min_interactions=settings.profile_min_interactions, profile_ridge_alpha=settings.profile_ridge_alpha,
        profile_fade_events=settings.profile_fade_events)
