"""Makes `customer_value` importable when a job file runs from a source checkout without an install.

On a cluster the package arrives as a wheel (--py-files or a cluster library) and this does nothing.
"""

import os
import sys

try:
    import customer_value  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
