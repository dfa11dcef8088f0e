"""Settings: the config dataclasses and presets (no torch import), strict field types, config files, flags from fields."""
