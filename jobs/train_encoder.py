"""Ray job entry point of ``weightzoo train`` (:mod:`pipeline.commands.train_encoder`):

    ray job submit --working-dir . -- python jobs/train_encoder.py --help
"""
from pipeline.commands.train_encoder import main

if __name__ == "__main__":
    main()
