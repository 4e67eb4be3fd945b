"""pymarl-nonmono: non-monotonic value factorisation for PyMARL2.

``pymarl_nonmono.numerics`` holds the host-independent pieces (mixers, TD(lambda)
targets, RND, action selection); ``pymarl_nonmono.hosts`` holds one thin adapter per
host framework. Importing this package has no side effects on any host.
"""

__version__ = "0.1.0"
