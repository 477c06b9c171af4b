// Ibex.cs — a P/Invoke binding over the ibex C ABI (include/ibex.h) for Mono (C# 7.2, as
// Debian's mcs compiles it), source-compatible with .NET and Unity.
//
// Every handle is a SafeHandle; errors are IbexException (Status, StatusName, the library's
// message), cancellation CancelledException. Callbacks go through static trampolines marked
// [MonoPInvokeCallback] with the managed callback reached through a GCHandle in the C ABI's
// `void* user` — the shape IL2CPP (Unity's ahead-of-time compiler) requires. The delegates
// handed to C are static and live for the process. No method logic lives here.
//
// SPDX-License-Identifier: Apache-2.0
using System;
using System.Collections.Generic;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Text;
#if UNITY_5_3_OR_NEWER
using MonoPInvokeCallbackAttribute = AOT.MonoPInvokeCallbackAttribute;
#endif

namespace Ibex
{
#if !UNITY_5_3_OR_NEWER
    /// <summary>Marks a static method as called from native code. In Unity the binding uses
    /// Unity's own <c>AOT.MonoPInvokeCallbackAttribute</c>, which IL2CPP requires.</summary>
    [AttributeUsage(AttributeTargets.Method)]
    public sealed class MonoPInvokeCallbackAttribute : Attribute
    {
        public MonoPInvokeCallbackAttribute(Type delegateType) { DelegateType = delegateType; }
        public Type DelegateType { get; private set; }
    }
#endif

    /// <summary>Status codes of the C ABI (IBEX_OK, IBEX_ERR_*).</summary>
    public static class Status
    {
        public const int Ok = 0, InvalidArgument = 1, NullPointer = 2, Io = 3, Format = 4, NotFound = 5,
            Unsupported = 6, Cancelled = 7, Numerical = 8, Backend = 9, BufferTooSmall = 10, OutOfRange = 11, Panic = 12;
    }

    /// <summary>An error from the library: its status and message.</summary>
    public class IbexException : Exception
    {
        public IbexException(int status, string message)
            : base(Native.StatusString(status) + ": " + message)
        {
            Status = status;
            LibraryMessage = message;
        }
        /// <summary>IBEX_ERR_* (see <see cref="Ibex.Status"/>).</summary>
        public int Status { get; private set; }
        /// <summary>The status's name, e.g. "invalid argument".</summary>
        public string StatusName { get { return Native.StatusString(Status); } }
        /// <summary>The library's message alone.</summary>
        public string LibraryMessage { get; private set; }
    }

    /// <summary>The call was cancelled (cancel token, or a progress callback returning false).</summary>
    public class CancelledException : IbexException
    {
        public CancelledException(string message) : base(Ibex.Status.Cancelled, message) { }
    }

    public enum PixelType { U8 = 0, U16 = 1, F32 = 2 }
    public enum Layout { Gray = 0, Rgb = 1, Rgba = 2 }
    public enum DicomKind { ParametricMap = 0, SecondaryCapture = 1 }
    public enum LogLevel { Error = 1, Warn = 2, Info = 3, Debug = 4 }

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    [return: MarshalAs(UnmanagedType.I1)]
    public delegate bool NativeProgress(uint done, uint total, IntPtr user);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    public delegate void NativeLog(int level, IntPtr message, IntPtr user);

    [StructLayout(LayoutKind.Sequential)]
    internal struct ImageViewNative
    {
        public uint StructSize, Width, Height, RowStride;
        public int PixelType, Layout;
        public IntPtr Data;
        public UIntPtr DataLen;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct TargetNative
    {
        public uint StructSize;
        public int ClassIndex;
        public IntPtr Text, Texts;
        public uint TextCount;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct RunControlNative
    {
        public uint StructSize;
        public IntPtr Progress, User, Cancel;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct MapInfoNative
    {
        public uint StructSize, Width, Height;
        public int TextIndex;
        public IntPtr Name, Units;
        public float MinValue, MaxValue;
    }

    /// <summary>DICOM reading options (frame, window, size ceiling).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct DicomOptions
    {
        internal uint StructSize;
        public uint Frame;
        /// <summary>The file's window to use (0-based): 0 is its first, or the frame's full range
        /// when it has none, so <c>new DicomOptions()</c> means the defaults.</summary>
        public int WindowIndex;
        public int UseWindow;
        public double WindowCenter, WindowWidth;
        /// <summary>0 = the library's default ceiling.</summary>
        public ulong MaxSamples;

        public static DicomOptions Default
        {
            get { return new DicomOptions { StructSize = (uint)Marshal.SizeOf(typeof(DicomOptions)) }; }
        }
    }

    /// <summary>The DICOM geometry and identity of an image read from DICOM.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct DicomInfo
    {
        internal uint StructSize;
        public uint Rows, Columns, Frames, Frame, SamplesPerPixel, BitsAllocated, BitsStored;
        public int HasPixelSpacing;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 2)] public double[] PixelSpacing;
        public int HasImagePosition;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 3)] public double[] ImagePosition;
        public int HasImageOrientation;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 6)] public double[] ImageOrientation;
        public double RescaleSlope, RescaleIntercept;
        public int HasWindow;
        public double WindowCenter, WindowWidth;
        [MarshalAs(UnmanagedType.ByValTStr, SizeConst = 65)] public string SopClassUid;
        [MarshalAs(UnmanagedType.ByValTStr, SizeConst = 65)] public string SopInstanceUid;
        [MarshalAs(UnmanagedType.ByValTStr, SizeConst = 65)] public string SeriesInstanceUid;
        [MarshalAs(UnmanagedType.ByValTStr, SizeConst = 65)] public string StudyInstanceUid;
        [MarshalAs(UnmanagedType.ByValTStr, SizeConst = 65)] public string FrameOfReferenceUid;
        [MarshalAs(UnmanagedType.ByValTStr, SizeConst = 65)] public string TransferSyntaxUid;
        [MarshalAs(UnmanagedType.ByValTStr, SizeConst = 17)] public string Modality;
        [MarshalAs(UnmanagedType.ByValTStr, SizeConst = 17)] public string PhotometricInterpretation;
    }

    internal static class Native
    {
#if (UNITY_IOS || UNITY_WEBGL) && !UNITY_EDITOR
        const string Lib = "__Internal"; // linked statically into the player
#else
        const string Lib = "ibex";
#endif

        [DllImport(Lib)] internal static extern uint ibex_abi_version();
        [DllImport(Lib)] internal static extern IntPtr ibex_version_string();
        [DllImport(Lib)] internal static extern IntPtr ibex_last_error_message();
        [DllImport(Lib)] internal static extern IntPtr ibex_status_string(int status);
        [DllImport(Lib)] internal static extern int ibex_set_log_callback(NativeLog callback, int maxLevel, IntPtr user);

        [DllImport(Lib)] internal static extern int ibex_options_create(out OptionsHandle o);
        [DllImport(Lib)] internal static extern int ibex_options_from_json(byte[] json, out OptionsHandle o);
        [DllImport(Lib)] internal static extern int ibex_options_set_float(OptionsHandle o, byte[] key, double v);
        [DllImport(Lib)] internal static extern int ibex_options_set_int(OptionsHandle o, byte[] key, long v);
        [DllImport(Lib)] internal static extern int ibex_options_set_str(OptionsHandle o, byte[] key, byte[] v);
        [DllImport(Lib)] internal static extern void ibex_options_free(IntPtr o);

        [DllImport(Lib)] internal static extern int ibex_model_load(byte[] kind, byte[] path, OptionsHandle options, out ModelHandle m);
        [DllImport(Lib)] internal static extern int ibex_model_describe_json(ModelHandle m, out BytesHandle b);
        [DllImport(Lib)] internal static extern void ibex_model_free(IntPtr m);

        [DllImport(Lib)] internal static extern int ibex_explainer_create(ModelHandle m, byte[] method, OptionsHandle o, out ExplainerHandle e);
        [DllImport(Lib)] internal static extern void ibex_explainer_free(IntPtr e);

        [DllImport(Lib)] internal static extern int ibex_image_load_file(byte[] path, out ImageHandle i);
        [DllImport(Lib)] internal static extern int ibex_image_load_dicom(byte[] path, ref DicomOptions o, out ImageHandle i);
        [DllImport(Lib)] internal static extern int ibex_image_get_view(ImageHandle i, ref ImageViewNative v);
        [DllImport(Lib)] internal static extern int ibex_image_dicom_info(ImageHandle i, ref DicomInfo info);
        [DllImport(Lib)] internal static extern void ibex_image_free(IntPtr i);

        [DllImport(Lib)] internal static extern int ibex_cancel_token_create(out CancelTokenHandle t);
        [DllImport(Lib)] internal static extern int ibex_cancel_token_cancel(CancelTokenHandle t);
        [DllImport(Lib)] internal static extern int ibex_cancel_token_reset(CancelTokenHandle t);
        [DllImport(Lib)] internal static extern void ibex_cancel_token_free(IntPtr t);

        [DllImport(Lib)]
        internal static extern int ibex_explain_batch(ExplainerHandle e, [In] ImageViewNative[] images, uint count,
            ref TargetNative target, ref RunControlNative control, [Out] IntPtr[] results);

        [DllImport(Lib)] internal static extern void ibex_result_free(IntPtr r);
        [DllImport(Lib)] internal static extern int ibex_result_map_count(ResultHandle r, out uint n);
        [DllImport(Lib)] internal static extern int ibex_result_map_info(ResultHandle r, uint index, ref MapInfoNative info);
        [DllImport(Lib)] internal static extern int ibex_result_copy_map(ResultHandle r, uint index, [Out] float[] dst, UIntPtr len, out UIntPtr outLen);
        [DllImport(Lib)] internal static extern int ibex_result_text_count(ResultHandle r, out uint n);
        [DllImport(Lib)] internal static extern int ibex_result_similarity(ResultHandle r, uint text, out float s);
        [DllImport(Lib)] internal static extern int ibex_result_token_count(ResultHandle r, uint text, out uint n);
        [DllImport(Lib)] internal static extern int ibex_result_token(ResultHandle r, uint text, uint token, out IntPtr str, out float score);
        [DllImport(Lib)] internal static extern int ibex_result_json(ResultHandle r, out IntPtr json);
        [DllImport(Lib)] internal static extern int ibex_result_source_region(ResultHandle r, [Out] float[] region);
        [DllImport(Lib)] internal static extern int ibex_render_overlay_png_bytes(ResultHandle r, ImageHandle original, uint map, byte[] colormap, float opacity, out BytesHandle b);
        [DllImport(Lib)] internal static extern int ibex_result_to_dicom(ResultHandle r, ImageHandle source, uint map, int kind, byte[] colormap, float opacity, out BytesHandle b);

        [DllImport(Lib)] internal static extern int ibex_bytes_data(BytesHandle b, out IntPtr data, out UIntPtr len);
        [DllImport(Lib)] internal static extern void ibex_bytes_free(IntPtr b);

        internal static string Utf8(IntPtr p)
        {
            if (p == IntPtr.Zero) return null;
            int n = 0;
            while (Marshal.ReadByte(p, n) != 0) n++;
            var bytes = new byte[n];
            Marshal.Copy(p, bytes, 0, n);
            return Encoding.UTF8.GetString(bytes);
        }

        /// <summary>A NUL-terminated UTF-8 copy of <paramref name="s"/> (null stays null).</summary>
        internal static byte[] Z(string s)
        {
            if (s == null) return null;
            var b = Encoding.UTF8.GetBytes(s);
            Array.Resize(ref b, b.Length + 1);
            return b;
        }

        internal static string StatusString(int status) { return Utf8(ibex_status_string(status)); }

        internal static void Check(int status)
        {
            if (status == Status.Ok) return;
            string msg = Utf8(ibex_last_error_message());
            if (status == Status.Cancelled) throw new CancelledException(msg);
            throw new IbexException(status, msg);
        }

        internal static byte[] TakeBytes(BytesHandle b)
        {
            using (b)
            {
                IntPtr data;
                UIntPtr len;
                Check(ibex_bytes_data(b, out data, out len));
                var out_ = new byte[(int)len.ToUInt64()];
                Marshal.Copy(data, out_, 0, out_.Length);
                return out_;
            }
        }

        internal static T Open<T>(T h) where T : SafeHandle
        {
            if (h == null || h.IsInvalid || h.IsClosed)
                throw new IbexException(Status.NullPointer, "the handle is closed");
            return h;
        }
    }

    public abstract class IbexHandle : SafeHandle
    {
        protected IbexHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
    }
    public sealed class OptionsHandle : IbexHandle { protected override bool ReleaseHandle() { Native.ibex_options_free(handle); return true; } }
    public sealed class ModelHandle : IbexHandle { protected override bool ReleaseHandle() { Native.ibex_model_free(handle); return true; } }
    public sealed class ExplainerHandle : IbexHandle { protected override bool ReleaseHandle() { Native.ibex_explainer_free(handle); return true; } }
    public sealed class ImageHandle : IbexHandle { protected override bool ReleaseHandle() { Native.ibex_image_free(handle); return true; } }
    public sealed class CancelTokenHandle : IbexHandle { protected override bool ReleaseHandle() { Native.ibex_cancel_token_free(handle); return true; } }
    public sealed class ResultHandle : IbexHandle
    {
        internal ResultHandle(IntPtr p) { SetHandle(p); }
        public ResultHandle() { }
        protected override bool ReleaseHandle() { Native.ibex_result_free(handle); return true; }
    }
    public sealed class BytesHandle : IbexHandle { protected override bool ReleaseHandle() { Native.ibex_bytes_free(handle); return true; } }

    /// <summary>Library-wide calls: versions, the log callback.</summary>
    public static class Library
    {
        /// <summary>The C ABI version this binding was written for.</summary>
        public const uint AbiVersion = 1;

        public static string Version { get { return Native.Utf8(Native.ibex_version_string()); } }

        /// <summary>Throws unless the loaded library has the ABI this binding expects.</summary>
        public static void CheckAbi()
        {
            uint abi = Native.ibex_abi_version();
            if (abi != AbiVersion)
                throw new IbexException(Status.Unsupported, "libibex has ABI " + abi + ", this binding expects " + AbiVersion);
        }

        static readonly NativeLog s_log = LogTrampoline;
        static Action<LogLevel, string> s_logger;

        [MonoPInvokeCallback(typeof(NativeLog))]
        static void LogTrampoline(int level, IntPtr message, IntPtr user)
        {
            var f = s_logger;
            if (f == null) return;
            try { f((LogLevel)level, Native.Utf8(message)); }
            catch (Exception) { /* a logger must not throw into native code: the message is dropped */ }
        }

        /// <summary>Sends ibex's messages up to <paramref name="maxLevel"/> to <paramref name="logger"/>
        /// (from any thread running ibex code); null switches logging off.</summary>
        public static void SetLogCallback(Action<LogLevel, string> logger, LogLevel maxLevel = LogLevel.Info)
        {
            s_logger = logger;
            Native.Check(Native.ibex_set_log_callback(logger == null ? null : s_log, (int)maxLevel, IntPtr.Zero));
        }
    }

    /// <summary>Options for a model or a method.</summary>
    public sealed class Options : IDisposable
    {
        internal readonly OptionsHandle Handle;
        public Options() { Native.Check(Native.ibex_options_create(out Handle)); }
        Options(OptionsHandle h) { Handle = h; }
        public static Options FromJson(string json)
        {
            OptionsHandle h;
            Native.Check(Native.ibex_options_from_json(Native.Z(json), out h));
            return new Options(h);
        }
        public Options Set(string key, double v) { Native.Check(Native.ibex_options_set_float(Native.Open(Handle), Native.Z(key), v)); return this; }
        public Options Set(string key, long v) { Native.Check(Native.ibex_options_set_int(Native.Open(Handle), Native.Z(key), v)); return this; }
        public Options Set(string key, int v) { return Set(key, (long)v); }
        public Options Set(string key, string v) { Native.Check(Native.ibex_options_set_str(Native.Open(Handle), Native.Z(key), Native.Z(v))); return this; }
        public void Dispose() { Handle.Dispose(); }
        internal static OptionsHandle Or(Options o) { return o == null ? new OptionsHandle() : Native.Open(o.Handle); }
    }

    /// <summary>A loaded model: immutable, shared by any number of explainers and threads.</summary>
    public sealed class Model : IDisposable
    {
        internal readonly ModelHandle Handle;
        Model(ModelHandle h) { Handle = h; }
        /// <summary>Loads a model directory; <paramref name="kind"/> null = detect.</summary>
        public static Model Load(string path, string kind = null, Options options = null)
        {
            ModelHandle h;
            Native.Check(Native.ibex_model_load(Native.Z(kind), Native.Z(path), Options.Or(options), out h));
            return new Model(h);
        }
        /// <summary>{"kind": ..., "methods": [...]}</summary>
        public string DescribeJson()
        {
            BytesHandle b;
            Native.Check(Native.ibex_model_describe_json(Native.Open(Handle), out b));
            return Encoding.UTF8.GetString(Native.TakeBytes(b));
        }
        public void Dispose() { Handle.Dispose(); }
    }

    /// <summary>A caller's pixel buffer: an array (byte[], ushort[] or float[]) with its size,
    /// row stride in bytes, pixel type and layout. Pinned only for the call.</summary>
    public struct Pixels
    {
        public Array Data;
        public uint Width, Height, RowStride;
        public PixelType Type;
        public Layout Layout;

        public Pixels(Array data, uint width, uint height, uint rowStride, PixelType type, Layout layout)
        {
            Data = data; Width = width; Height = height; RowStride = rowStride; Type = type; Layout = layout;
        }
    }

    /// <summary>An image decoded by ibex (PNG, JPEG, WebP, BMP, TIFF, DICOM).</summary>
    public sealed class Image : IDisposable
    {
        internal readonly ImageHandle Handle;
        Image(ImageHandle h) { Handle = h; }
        public static Image Load(string path)
        {
            ImageHandle h;
            Native.Check(Native.ibex_image_load_file(Native.Z(path), out h));
            return new Image(h);
        }
        public static Image LoadDicom(string path, DicomOptions options)
        {
            ImageHandle h;
            options.StructSize = (uint)Marshal.SizeOf(typeof(DicomOptions));
            Native.Check(Native.ibex_image_load_dicom(Native.Z(path), ref options, out h));
            return new Image(h);
        }
        public DicomInfo DicomInfo()
        {
            var info = new DicomInfo { StructSize = (uint)Marshal.SizeOf(typeof(DicomInfo)) };
            Native.Check(Native.ibex_image_dicom_info(Native.Open(Handle), ref info));
            return info;
        }
        internal ImageViewNative View()
        {
            var v = new ImageViewNative { StructSize = (uint)Marshal.SizeOf(typeof(ImageViewNative)) };
            Native.Check(Native.ibex_image_get_view(Native.Open(Handle), ref v));
            return v;
        }
        public void Dispose() { Handle.Dispose(); }
    }

    /// <summary>Cancels a running call from any thread.</summary>
    public sealed class CancelToken : IDisposable
    {
        internal readonly CancelTokenHandle Handle;
        public CancelToken() { Native.Check(Native.ibex_cancel_token_create(out Handle)); }
        public void Cancel() { Native.Check(Native.ibex_cancel_token_cancel(Native.Open(Handle))); }
        public void Reset() { Native.Check(Native.ibex_cancel_token_reset(Native.Open(Handle))); }
        public void Dispose() { Handle.Dispose(); }
    }

    /// <summary>What to explain: a class (-1 = the predicted one) and/or captions.</summary>
    public sealed class Target
    {
        public int ClassIndex = -1;
        public string[] Texts = new string[0];
        public static Target Class(int c) { return new Target { ClassIndex = c }; }
        public static Target Captions(params string[] t) { return new Target { Texts = t }; }
    }

    /// <summary>One map: name, units, size and a copy of its values (row-major).</summary>
    public sealed class Map
    {
        public string Name, Units;
        public uint Width, Height;
        public int TextIndex;
        public float Min, Max;
        public float[] Data;
    }

    /// <summary>An explanation. Immutable; readable from any thread.</summary>
    public sealed class Result : IDisposable
    {
        readonly ResultHandle h;
        internal Result(ResultHandle handle) { h = handle; }

        public uint MapCount { get { uint n; Native.Check(Native.ibex_result_map_count(Native.Open(h), out n)); return n; } }

        public Map GetMap(uint index)
        {
            var info = new MapInfoNative { StructSize = (uint)Marshal.SizeOf(typeof(MapInfoNative)) };
            Native.Check(Native.ibex_result_map_info(Native.Open(h), index, ref info));
            var data = new float[(long)info.Width * info.Height];
            UIntPtr n;
            Native.Check(Native.ibex_result_copy_map(h, index, data, (UIntPtr)data.Length, out n));
            var map = new Map
            {
                Name = Native.Utf8(info.Name), Units = Native.Utf8(info.Units), Width = info.Width, Height = info.Height,
                TextIndex = info.TextIndex, Min = info.MinValue, Max = info.MaxValue, Data = data,
            };
            GC.KeepAlive(h); // the names are borrowed from the result
            return map;
        }

        public uint TextCount { get { uint n; Native.Check(Native.ibex_result_text_count(Native.Open(h), out n)); return n; } }

        public float Similarity(uint text)
        {
            float s;
            Native.Check(Native.ibex_result_similarity(Native.Open(h), text, out s));
            return s;
        }

        public List<KeyValuePair<string, float>> Tokens(uint text)
        {
            uint n;
            Native.Check(Native.ibex_result_token_count(Native.Open(h), text, out n));
            var out_ = new List<KeyValuePair<string, float>>();
            for (uint i = 0; i < n; i++)
            {
                IntPtr s;
                float score;
                Native.Check(Native.ibex_result_token(h, text, i, out s, out score));
                out_.Add(new KeyValuePair<string, float>(Native.Utf8(s), score));
            }
            GC.KeepAlive(h); // the token strings are borrowed from the result
            return out_;
        }

        /// <summary>The report: method, target, top-5, texts, maps, settings, timing.</summary>
        public string Json
        {
            get
            {
                IntPtr s;
                Native.Check(Native.ibex_result_json(Native.Open(h), out s));
                var json = Native.Utf8(s);
                GC.KeepAlive(h); // the string is borrowed from the result
                return json;
            }
        }

        /// <summary>x0, y0, x1, y1 of the maps on the original image.</summary>
        public float[] SourceRegion
        {
            get { var r = new float[4]; Native.Check(Native.ibex_result_source_region(Native.Open(h), r)); return r; }
        }

        /// <summary>The map over the image as PNG bytes (over <paramref name="original"/> at its size when given).</summary>
        public byte[] OverlayPng(uint map = 0, string colormap = null, float opacity = 0.5f, Image original = null)
        {
            BytesHandle b;
            Native.Check(Native.ibex_render_overlay_png_bytes(Native.Open(h), original == null ? new ImageHandle() : Native.Open(original.Handle),
                map, Native.Z(colormap), opacity, out b));
            return Native.TakeBytes(b);
        }

        /// <summary>A Parametric Map or Secondary Capture derived from the DICOM image explained.</summary>
        public byte[] ToDicom(Image source, DicomKind kind, uint map = 0, string colormap = null, float opacity = 0.5f)
        {
            BytesHandle b;
            Native.Check(Native.ibex_result_to_dicom(Native.Open(h), Native.Open(source.Handle), map, (int)kind, Native.Z(colormap), opacity, out b));
            return Native.TakeBytes(b);
        }

        public void Dispose() { h.Dispose(); }
    }

    /// <summary>A method for a model, with its options; one per thread.</summary>
    public sealed class Explainer : IDisposable
    {
        readonly ExplainerHandle h;

        public Explainer(Model model, string method, Options options = null)
        {
            Native.Check(Native.ibex_explainer_create(Native.Open(model.Handle), Native.Z(method), Options.Or(options), out h));
        }

        sealed class ProgressState
        {
            public Func<uint, uint, bool> Fn;
            public Exception Thrown;
        }

        static readonly NativeProgress s_progress = ProgressTrampoline;

        [MonoPInvokeCallback(typeof(NativeProgress))]
        [return: MarshalAs(UnmanagedType.I1)]
        static bool ProgressTrampoline(uint done, uint total, IntPtr user)
        {
            var st = (ProgressState)GCHandle.FromIntPtr(user).Target;
            try { return st.Fn(done, total); }
            catch (Exception e) { st.Thrown = e; return false; }
        }

        public Result Explain(Image image, Target target = null, Func<uint, uint, bool> progress = null, CancelToken cancel = null)
        {
            return ExplainBatch(new[] { image }, target, progress, cancel)[0];
        }

        public Result Explain(Pixels pixels, Target target = null, Func<uint, uint, bool> progress = null, CancelToken cancel = null)
        {
            return ExplainBatch(new[] { pixels }, target, progress, cancel)[0];
        }

        public Result[] ExplainBatch(Image[] images, Target target = null, Func<uint, uint, bool> progress = null, CancelToken cancel = null)
        {
            // Each image is referenced for the call: a Dispose or a finalizer on another thread
            // cannot free pixels the library is reading.
            var held = new List<SafeHandle>();
            try
            {
                var views = new ImageViewNative[images.Length];
                for (int i = 0; i < images.Length; i++)
                {
                    views[i] = images[i].View();
                    Hold(images[i].Handle, held);
                }
                return Run(views, target, progress, cancel);
            }
            finally
            {
                foreach (var x in held) x.DangerousRelease();
            }
        }

        static void Hold(SafeHandle handle, List<SafeHandle> held)
        {
            bool ok = false;
            Native.Open(handle).DangerousAddRef(ref ok);
            if (!ok) throw new IbexException(Status.NullPointer, "the handle is closed");
            held.Add(handle);
        }

        /// <summary>Explains caller buffers (pinned, not copied, for the call's duration).</summary>
        public Result[] ExplainBatch(Pixels[] pixels, Target target = null, Func<uint, uint, bool> progress = null, CancelToken cancel = null)
        {
            var pins = new GCHandle[pixels.Length];
            try
            {
                var views = new ImageViewNative[pixels.Length];
                for (int i = 0; i < pixels.Length; i++)
                {
                    var p = pixels[i];
                    if (p.Data == null) throw new ArgumentNullException("pixels[" + i + "].Data");
                    int elem;
                    if (p.Data is byte[]) elem = 1;
                    else if (p.Data is ushort[]) elem = 2;
                    else if (p.Data is float[]) elem = 4;
                    else throw new ArgumentException("pixel arrays are byte[], ushort[] or float[], got " + p.Data.GetType());
                    pins[i] = GCHandle.Alloc(p.Data, GCHandleType.Pinned);
                    views[i] = new ImageViewNative
                    {
                        StructSize = (uint)Marshal.SizeOf(typeof(ImageViewNative)),
                        Width = p.Width, Height = p.Height, RowStride = p.RowStride,
                        PixelType = (int)p.Type, Layout = (int)p.Layout,
                        Data = pins[i].AddrOfPinnedObject(),
                        DataLen = (UIntPtr)((ulong)p.Data.LongLength * (ulong)elem),
                    };
                }
                return Run(views, target, progress, cancel);
            }
            finally
            {
                foreach (var pin in pins) if (pin.IsAllocated) pin.Free();
            }
        }

        Result[] Run(ImageViewNative[] views, Target target, Func<uint, uint, bool> progress, CancelToken cancel)
        {
            target = target ?? new Target();
            var texts = target.Texts ?? new string[0];
            var strings = new GCHandle[texts.Length];
            var ptrs = new IntPtr[texts.Length];
            GCHandle ptrsPin = default(GCHandle), statePin = default(GCHandle);
            var state = new ProgressState { Fn = progress };
            var held = new List<SafeHandle>();
            try
            {
                if (cancel != null) Hold(cancel.Handle, held);
                for (int i = 0; i < texts.Length; i++)
                {
                    strings[i] = GCHandle.Alloc(Native.Z(texts[i]), GCHandleType.Pinned);
                    ptrs[i] = strings[i].AddrOfPinnedObject();
                }
                ptrsPin = GCHandle.Alloc(ptrs, GCHandleType.Pinned);
                statePin = GCHandle.Alloc(state);
                var t = new TargetNative
                {
                    StructSize = (uint)Marshal.SizeOf(typeof(TargetNative)),
                    ClassIndex = target.ClassIndex,
                    Texts = texts.Length == 0 ? IntPtr.Zero : ptrsPin.AddrOfPinnedObject(),
                    TextCount = (uint)texts.Length,
                };
                var control = new RunControlNative
                {
                    StructSize = (uint)Marshal.SizeOf(typeof(RunControlNative)),
                    Progress = progress == null ? IntPtr.Zero : Marshal.GetFunctionPointerForDelegate(s_progress),
                    User = GCHandle.ToIntPtr(statePin),
                    Cancel = cancel == null ? IntPtr.Zero : Native.Open(cancel.Handle).DangerousGetHandle(),
                };
                var raw = new IntPtr[views.Length];
                int status = Native.ibex_explain_batch(Native.Open(h), views, (uint)views.Length, ref t, ref control, raw);
                if (state.Thrown != null) ExceptionDispatchInfo.Capture(state.Thrown).Throw();
                Native.Check(status);
                var results = new Result[raw.Length];
                for (int i = 0; i < raw.Length; i++) results[i] = new Result(new ResultHandle(raw[i]));
                return results;
            }
            finally
            {
                foreach (var x in held) x.DangerousRelease();
                foreach (var s in strings) if (s.IsAllocated) s.Free();
                if (ptrsPin.IsAllocated) ptrsPin.Free();
                if (statePin.IsAllocated) statePin.Free();
            }
        }

        public void Dispose() { h.Dispose(); }
    }
}
