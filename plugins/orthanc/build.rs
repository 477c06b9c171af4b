//! Compiles the C shim over Orthanc's SDK header (Debian `orthanc-dev`: /usr/include/orthanc,
//! or the directory in ORTHANC_SDK_INCLUDE) and links the plugin with its calls bound inside it.

fn main() {
    let include = std::env::var("ORTHANC_SDK_INCLUDE").unwrap_or_else(|_| "/usr/include".into());
    let header = std::path::Path::new(&include).join("orthanc").join("OrthancCPlugin.h");
    if !header.is_file() {
        panic!(
            "{} not found: install Orthanc's plugin SDK (Debian: apt install orthanc-dev) or set \
             ORTHANC_SDK_INCLUDE to the directory that holds orthanc/OrthancCPlugin.h",
            header.display()
        );
    }
    cc::Build::new().file("shim/shim.c").include(&include).warnings(true).extra_warnings(true).compile("ibexo_shim");
    // The plugin's own calls into ibex bind inside the library: another ibex in the same
    // process (a host that also links libibex.so) cannot interpose on them.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic");
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-env-changed=ORTHANC_SDK_INCLUDE");
}
