"""Ray job entry point of ``weightzoo index`` (:mod:`pipeline.commands.embed_zoo`):

    ray job submit --working-dir . -- python jobs/embed_zoo.py --help
"""
from pipeline.commands.embed_zoo import main

if __name__ == "__main__":
    main()
