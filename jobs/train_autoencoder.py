"""Ray job entry point of ``weightzoo train-autoencoder`` (:mod:`pipeline.commands.train_autoencoder`):

    ray job submit --working-dir . -- python jobs/train_autoencoder.py --help
"""
from pipeline.commands.train_autoencoder import main

if __name__ == "__main__":
    main()
