"""Small helpers every layer may import (standard library only)."""
