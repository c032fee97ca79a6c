
raw*
xUINT8:ÿ