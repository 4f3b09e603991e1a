"""Ray job entry point of ``weightzoo evaluate-autoencoder`` (:mod:`pipeline.commands.evaluate_autoencoder`):

    ray job submit --working-dir . -- python jobs/evaluate_autoencoder.py --help
"""
from pipeline.commands.evaluate_autoencoder import main

if __name__ == "__main__":
    main()
