using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace Broker.Storage.Tests;

/// <summary>What of a file the kernel holds in its page cache (Linux <c>mincore</c> over a read-only mapping).</summary>
internal static class PageCache
{
    [DllImport("libc", SetLastError = true)]
    private static extern unsafe int mincore(byte* address, nuint length, byte* vector);

    /// <summary>Pages of <paramref name="path"/> resident in the page cache (mapping it faults none in).</summary>
    public static unsafe int ResidentPages(string path)
    {
        long length = new FileInfo(path).Length;
        if (length == 0)
            return 0;
        using var file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        using var view = file.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        byte* address = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref address);
        try
        {
            int pages = (int)((length + Environment.SystemPageSize - 1) / Environment.SystemPageSize);
            var vector = new byte[pages];
            fixed (byte* v = vector)
            {
                // The handle's pointer is the page-aligned start of the mapping, which begins at the file's start.
                if (mincore(address, (nuint)length, v) != 0)
                    throw new IOException($"mincore failed: errno {Marshal.GetLastPInvokeError()}");
            }
            return vector.Count(b => (b & 1) != 0);
        }
        finally
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
        }
    }

    /// <summary>True when <paramref name="path"/> lies on a file system whose pages the kernel can drop (tmpfs's cannot).</summary>
    public static bool CanDrop(string path)
    {
        string full = Path.GetFullPath(path);
        string type = "";
        int longest = -1;
        foreach (string line in File.ReadLines("/proc/self/mounts"))
        {
            var fields = line.Split(' ');
            // Mount points escape spaces and the like as \ooo octal.
            string mount = System.Text.RegularExpressions.Regex.Replace(fields.Length > 1 ? fields[1] : "", @"\\([0-7]{3})",
                m => ((char)Convert.ToInt32(m.Groups[1].Value, 8)).ToString());
            bool under = full == mount || full.StartsWith(mount.EndsWith('/') ? mount : mount + "/", StringComparison.Ordinal);
            if (fields.Length > 2 && under && mount.Length > longest)
                (longest, type) = (mount.Length, fields[2]);
        }
        return type is not ("tmpfs" or "ramfs" or "");
    }
}
