"""The bundled example slide (derived from BCCD, MIT licence; see LICENSE-BCCD.txt)."""
