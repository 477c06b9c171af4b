//! Image files on disk: the images of one directory, and torchvision's `ImageFolder` layout
//! (one sub-directory per class, classes in sorted order, label = index).

use super::image::RgbImage;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "pgm"];

fn is_image(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The image files directly in `dir`, sorted by name; an error if there are none.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_image(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::NotFound(format!("{}: no image files ({})", dir.display(), IMAGE_EXTENSIONS.join(", "))));
    }
    Ok(files)
}

/// The sub-directories of `dir`, sorted by name (the class order of `ImageFolder`).
pub fn sub_directories(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// A labelled image set in the `ImageFolder` layout, decoded into memory.
pub struct ImageFolder {
    /// Class directory names, sorted (label `i` is `classes[i]`).
    pub classes: Vec<String>,
    pub images: Vec<RgbImage>,
    pub labels: Vec<u32>,
    pub paths: Vec<PathBuf>,
}

/// Decoded images above this many bytes are refused (a folder this large needs streaming).
const MAX_DECODED_BYTES: usize = 8 << 30;

impl ImageFolder {
    /// Reads every class directory of `root`. With `per_class`, only the first that many
    /// files (by name) of each class. Every image is decoded here, so an unreadable file
    /// fails before any work starts, naming the file.
    ///
    /// # Errors
    /// No class directories, a class directory without images (the class would be silently
    /// missing from training), an unreadable image, or more than 8 GiB of decoded pixels.
    pub fn load(root: &Path, per_class: Option<usize>, mut progress: impl FnMut(usize, usize)) -> Result<Self> {
        let dirs = sub_directories(root)?;
        if dirs.is_empty() {
            return Err(Error::NotFound(format!(
                "{}: no class directories (expected one sub-directory of images per class)",
                root.display()
            )));
        }
        let mut classes = Vec::new();
        let mut files = Vec::new();
        for (label, d) in dirs.iter().enumerate() {
            let mut f = image_files(d).map_err(|_| {
                Error::invalid(format!(
                    "class directory {} has no images ({})",
                    d.display(),
                    IMAGE_EXTENSIONS.join(", ")
                ))
            })?;
            if let Some(n) = per_class {
                f.truncate(n);
            }
            classes.push(d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            files.extend(f.into_iter().map(|p| (p, label as u32)));
        }
        let total = files.len();
        let (mut images, mut labels, mut paths) = (Vec::with_capacity(total), Vec::with_capacity(total), Vec::new());
        let mut bytes = 0usize;
        for (i, (p, label)) in files.into_iter().enumerate() {
            let img = RgbImage::load(&p)?;
            bytes += img.data.len() * std::mem::size_of::<f32>();
            if bytes > MAX_DECODED_BYTES {
                return Err(Error::invalid(format!(
                    "{}: the decoded images exceed {} GiB; use fewer images per class",
                    root.display(),
                    MAX_DECODED_BYTES >> 30
                )));
            }
            images.push(img);
            labels.push(label);
            paths.push(p);
            progress(i + 1, total);
        }
        Ok(ImageFolder { classes, images, labels, paths })
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}
