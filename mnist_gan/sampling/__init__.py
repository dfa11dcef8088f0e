"""Sampling: drawing images from G, grids, latent walks, the discriminator's favourites, and export."""
