"""Score networks: MLP for low-dimensional data, NCSN++/DDPM++ and the DDPM U-Net for images."""
