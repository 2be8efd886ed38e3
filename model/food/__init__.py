"""Food knowledge that needs no torch: the dish catalog, what fits a request, safety notes, Korean morphology."""
