"""Import stand-in for torchvision, used ONLY by the test harness for a host whose python cannot import the real
package (a provisioned host has the same stand-in on its own environment's path already; see lean_standin.py).
Importing this package installs the stand-in finder and puts a stand-in module in its place, so that any
submodule imports and anything really used fails loudly."""
import sys

import lean_standin

lean_standin.install()
sys.modules[__name__] = lean_standin.standin_module(__name__)
