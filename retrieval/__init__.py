"""retrieval: Whoosh job index and batch cosine first-stage retrieval."""
