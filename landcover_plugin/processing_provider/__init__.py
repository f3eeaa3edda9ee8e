"""Processing provider "Landcover" (id ``landcover``)."""
