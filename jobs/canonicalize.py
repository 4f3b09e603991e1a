"""Ray job entry point of ``weightzoo canonicalize`` (:mod:`pipeline.commands.canonicalize`):

    ray job submit --working-dir . -- python jobs/canonicalize.py --help
"""
from pipeline.commands.canonicalize import main

if __name__ == "__main__":
    main()
