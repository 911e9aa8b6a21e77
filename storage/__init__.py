"""Everything on disk: Arrow schemas, the corpus directory, teacher dumps, DuckDB. No model code."""

from cpfd.storage.errors import CpfdError

__all__ = ["CpfdError"]
