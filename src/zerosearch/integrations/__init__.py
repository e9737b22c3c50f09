"""Adapters to training systems other than TRL. Each sub-package imports its system only when used."""
