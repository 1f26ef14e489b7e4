"""Beam's own pipeline options: the flags we pass through to Beam untouched."""

from __future__ import annotations

from masked_shards.config import ConfigError


def check_beam_args(extra: list[str]) -> list[str]:
    """Every leftover flag must be a Beam option; a typo of ours must not vanish into Beam.
    Without any, Beam is not imported here (it takes a second; a run imports it later anyway)."""
    if not extra:
        return extra
    from apache_beam.options.pipeline_options import PipelineOptions

    known = set(PipelineOptions([]).get_all_options(retain_unknown_options=False))
    expects_value = False
    for arg in extra:
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            if name[2:] not in known:
                raise ConfigError(f"Unknown flag {name}; see masked-shards run --help.")
            expects_value = "=" not in arg
        elif expects_value:
            expects_value = False
        else:
            raise ConfigError(f"Unexpected argument {arg!r}.")
    return extra
