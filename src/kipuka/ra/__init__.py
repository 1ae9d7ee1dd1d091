"""The registration authority: who may get which certificate, decided without HTTP or SQL."""
