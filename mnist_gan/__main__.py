import sys

from mnist_gan.cli import main

sys.exit(main())
