"""Ray job entry point of ``weightzoo make-zoo`` (:mod:`pipeline.commands.make_zoo`):

    ray job submit --working-dir . -- python jobs/make_zoo.py --help
"""
from pipeline.commands.make_zoo import main

if __name__ == "__main__":
    main()
