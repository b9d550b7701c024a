"""Evidence sources. Each answers with a `SourceResult`: a value, or the gap that explains its absence."""
