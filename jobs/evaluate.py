"""Ray job entry point of ``weightzoo evaluate`` (:mod:`pipeline.commands.evaluate`):

    ray job submit --working-dir . -- python jobs/evaluate.py --help
"""
from pipeline.commands.evaluate import main

if __name__ == "__main__":
    main()
