"""The release: its own module, so code in any layer can name it without importing the
package root (which exports the library, a layer above them all)."""

__version__ = "0.1.0"
