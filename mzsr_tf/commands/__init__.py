"""The command-line programs (``mzsr-adapt``, ``mzsr-train``, ``mzsr-export``): flags in, one library call out."""
