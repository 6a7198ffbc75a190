"""Developer tools that are not shipped: test, soak and benchmark harnesses.

Nothing here runs in a deployment (``chat/tools`` holds what does); the
package sits beside ``chat`` so the tests and ``make soak`` can import it
from a checkout, and setup.cfg leaves it out of the distribution.
"""
