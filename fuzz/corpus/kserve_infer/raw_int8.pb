
raw*
xINT8:ÿ