"""placeholder: the reader arrives below."""
