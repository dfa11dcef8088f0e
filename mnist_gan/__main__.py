import sys

from mnist_gan.cli.parser import main

sys.exit(main())
