"""hipsternet @ 563de65: the parts of ``hipsternet/`` a network uses."""
