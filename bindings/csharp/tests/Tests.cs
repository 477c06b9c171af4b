// Tests of the C# binding against the real library and models. Usage: mono Tests.exe REPO_ROOT
// Ends with the line "N passed, M failed"; exit status 1 on failure.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Threading;
using Ibex;

static class Tests
{
    static string root;
    static int passed, failed;

    static void Run(string name, Action test)
    {
        try { test(); passed++; Console.WriteLine("ok   " + name); }
        catch (Exception e) { failed++; Console.WriteLine("FAIL " + name + ": " + e); }
    }

    static void Check(bool cond, string what)
    {
        if (!cond) throw new Exception("check failed: " + what);
    }

    static IbexException ExpectError(int status, Action f)
    {
        try { f(); }
        catch (IbexException e)
        {
            if (e.Status != status) throw new Exception("expected status " + status + ", got " + e.Status + ": " + e.Message);
            return e;
        }
        throw new Exception("expected an IbexException with status " + status);
    }

    static string Cat { get { return Path.Combine(root, "examples/images/chelsea.png"); } }
    static string Items { get { return Path.Combine(root, "examples/images/four_items.png"); } }

    static bool Same(float[] a, float[] b)
    {
        if (a.Length != b.Length) return false;
        for (int i = 0; i < a.Length; i++)
            if (BitConverter.ToInt32(BitConverter.GetBytes(a[i]), 0) != BitConverter.ToInt32(BitConverter.GetBytes(b[i]), 0)) return false;
        return true;
    }

    static int Main(string[] args)
    {
        root = args[0];
        Run("version and ABI", () =>
        {
            Library.CheckAbi();
            Check(Library.Version.StartsWith("0."), Library.Version);
        });
        var cnn = Model.Load(Path.Combine(root, "models/efficientnet-lite0"));
        var clip = Model.Load(Path.Combine(root, "models/fmnist-clip"), "clip");

        Run("Grad-CAM: file, strided buffer and the C ABI view agree", () =>
        {
            using (var ex = new Explainer(cnn, "gradcam"))
            using (var img = Image.Load(Cat))
            using (var r = ex.Explain(img))
            {
                var m = r.GetMap(0);
                Check(m.Name == "gradcam" && m.Data.Length == m.Width * m.Height && m.Data.Length > 0, "map shape");
                Check(r.Json.Contains("\"top5\""), "report");
                var region = r.SourceRegion;
                Check(region[2] > region[0] && region[3] > region[1], "region");
                // The decoded pixels copied into a buffer whose rows are 13 bytes wider.
                var v = img.View();
                int row = (int)v.RowStride, pad = 13;
                var src = new byte[row * (int)v.Height];
                System.Runtime.InteropServices.Marshal.Copy(v.Data, src, 0, src.Length);
                var wide = new byte[(row + pad) * (int)v.Height];
                for (int y = 0; y < v.Height; y++) Buffer.BlockCopy(src, y * row, wide, y * (row + pad), row);
                using (var r2 = ex.Explain(new Pixels(wide, v.Width, v.Height, (uint)(row + pad), PixelType.U8, Layout.Rgb)))
                    Check(Same(r2.GetMap(0).Data, m.Data), "strided buffer gives the same map bit for bit");
            }
        });

        Run("M2IB: progress, tokens, similarity, overlay", () =>
        {
            var seen = new List<uint[]>();
            using (var o = new Options().Set("steps", 3))
            using (var ex = new Explainer(clip, "m2ib", o))
            using (var img = Image.Load(Items))
            using (var r = ex.Explain(img, Target.Captions("a sandal", "a bag"), (d, t) => { seen.Add(new[] { d, t }); return true; }))
            {
                Check(seen.Count > 0 && seen.Last()[0] == seen.Last()[1], "progress reaches the end");
                Check(r.TextCount == 2, "two captions");
                Check(r.Tokens(0).Any(t => t.Key.Contains("sandal")), "tokens");
                var s = r.Similarity(1);
                Check(s >= -1 && s <= 1, "similarity");
                var png = r.OverlayPng(0, "viridis", 0.6f);
                Check(png.Length > 8 && png[1] == (byte)'P' && png[2] == (byte)'N' && png[3] == (byte)'G', "PNG");
            }
        });

        Run("cancel from another thread, from the callback, and an exception in the callback", () =>
        {
            using (var o = new Options().Set("steps", 200))
            using (var ex = new Explainer(clip, "m2ib", o))
            using (var img = Image.Load(Items))
            using (var token = new CancelToken())
            {
                var started = new ManualResetEventSlim(false);
                var canceller = new Thread(() => { started.Wait(30000); token.Cancel(); });
                canceller.Start();
                var e = ExpectError(Status.Cancelled, () => ex.Explain(img, Target.Captions("a sandal"), (d, t) => { started.Set(); return true; }, token));
                Check(e is CancelledException, "CancelledException");
                canceller.Join();
                token.Reset();
                ExpectError(Status.Cancelled, () => ex.Explain(img, Target.Captions("a sandal"), (d, t) => d < 2));
                bool caught = false;
                try { ex.Explain(img, Target.Captions("a sandal"), (d, t) => { throw new InvalidOperationException("from the callback"); }); }
                catch (InvalidOperationException) { caught = true; }
                Check(caught, "the callback's exception comes back as itself");
            }
        });

        Run("errors carry the library's status and message", () =>
        {
            var e = ExpectError(Status.Unsupported, () => new Explainer(cnn, "no-such-method"));
            Check(e.LibraryMessage.Contains("no-such-method") && e.StatusName == "unsupported", e.Message);
            using (var bad = new Options().Set("no_such_option", 1))
                Check(ExpectError(Status.InvalidArgument, () => new Explainer(cnn, "iba", bad)).LibraryMessage.Contains("no_such_option"), "option");
            try { Model.Load(Path.Combine(root, "no/such/model")); throw new Exception("loaded"); }
            catch (IbexException x) { Check(x.Status == Status.NotFound || x.Status == Status.Io, x.Message); }
            ExpectError(Status.Io, () => Image.Load(Path.Combine(root, "no/such.png")));
            using (var ex = new Explainer(cnn, "gradcam"))
            {
                ExpectError(Status.InvalidArgument, () => ex.Explain(new Pixels(new byte[8 * 8 * 3], 8, 8, 24, PixelType.U8, Layout.Rgb)));
                var shortBuf = ExpectError(Status.InvalidArgument, () => ex.Explain(new Pixels(new byte[100], 64, 64, 192, PixelType.U8, Layout.Rgb)));
                Check(shortBuf.LibraryMessage.Contains("100"), shortBuf.Message);
                bool typeError = false;
                try { ex.Explain(new Pixels(new int[10], 2, 2, 8, PixelType.U8, Layout.Rgb)); }
                catch (ArgumentException) { typeError = true; }
                Check(typeError, "an int[] buffer is an ArgumentException");
                using (var img = Image.Load(Cat))
                    ExpectError(Status.InvalidArgument, () => ex.Explain(img, Target.Class(5000)));
                ex.Dispose();
                using (var img = Image.Load(Cat))
                    Check(ExpectError(Status.NullPointer, () => ex.Explain(img)).LibraryMessage.Contains("closed"), "closed handle");
            }
        });

        Run("a batch equals single calls", () =>
        {
            using (var ex = new Explainer(cnn, "gradcam"))
            using (var a = Image.Load(Cat))
            using (var b = Image.Load(Items))
            {
                var batch = ex.ExplainBatch(new[] { a, b }, Target.Class(281));
                using (var sa = ex.Explain(a, Target.Class(281)))
                using (var sb = ex.Explain(b, Target.Class(281)))
                {
                    Check(Same(batch[0].GetMap(0).Data, sa.GetMap(0).Data) && Same(batch[1].GetMap(0).Data, sb.GetMap(0).Data), "same maps");
                }
                foreach (var r in batch) r.Dispose();
            }
        });

        Run("4 threads share one model, each with its own explainer", () =>
        {
            float[] want;
            using (var ex = new Explainer(cnn, "gradcam"))
            using (var img = Image.Load(Cat))
            using (var r = ex.Explain(img)) want = r.GetMap(0).Data;
            var got = new float[4][];
            var errors = new string[4];
            var threads = Enumerable.Range(0, 4).Select(i => new Thread(() =>
            {
                try
                {
                    using (var ex = new Explainer(cnn, "gradcam"))
                    using (var img = Image.Load(Cat))
                    using (var r = ex.Explain(img)) got[i] = r.GetMap(0).Data;
                }
                catch (Exception e) { errors[i] = e.ToString(); }
            })).ToArray();
            foreach (var t in threads) t.Start();
            foreach (var t in threads) t.Join();
            for (int i = 0; i < 4; i++) Check(errors[i] == null && Same(got[i], want), "thread " + i + ": " + errors[i]);
        });

        Run("DICOM in, Parametric Map out", () =>
        {
            var o = DicomOptions.Default;
            o.UseWindow = 1; o.WindowCenter = 40; o.WindowWidth = 400;
            using (var img = Image.LoadDicom(Path.Combine(root, "../shared/fixtures/images/dicom/CT_small.dcm"), o))
            using (var ex = new Explainer(cnn, "gradcam"))
            using (var r = ex.Explain(img))
            {
                var info = img.DicomInfo();
                Check(info.Rows == 128 && info.Columns == 128 && info.Modality == "CT" && info.HasWindow == 1, "info");
                var pm = r.ToDicom(img, DicomKind.ParametricMap);
                Check(pm.Length > 128 * 128 * 4 && pm[128] == (byte)'D' && pm[131] == (byte)'M', "a DICOM file");
                Check(r.OverlayPng(0, null, 0.5f, img).Length > 8, "overlay on the original");
            }
        });

        Run("log callback", () =>
        {
            var messages = new List<string>();
            Library.SetLogCallback((level, m) => { lock (messages) messages.Add(m); }, LogLevel.Debug);
            using (Model.Load(Path.Combine(root, "models/fmnist-clip"), "clip")) { }
            ExpectError(Status.Unsupported, () => new Explainer(cnn, "no-such-method"));
            Library.SetLogCallback(null);
            lock (messages)
            {
                Check(messages.Any(m => m.Contains("loaded CLIP")), "model load logged");
                Check(messages.Any(m => m.Contains("no-such-method")), "failed call logged");
            }
        });

        cnn.Dispose();
        clip.Dispose();
        Console.WriteLine(passed + " passed, " + failed + " failed");
        return failed == 0 ? 0 : 1;
    }
}
