"""Customer profiles: identity resolution and merges, normalised contact data, consent."""
