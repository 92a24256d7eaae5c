using System.Runtime.InteropServices;

namespace Broker.Storage.Files;

/// <summary>The few libc calls .NET does not expose: fsync of a directory, page-cache advice.</summary>
internal static partial class NativeMethods
{
    // O_RDONLY | O_DIRECTORY on Linux.
    public const int ReadOnlyDirectory = 0x10000;

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    public static partial int Fsync(int descriptor);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int descriptor);

    // POSIX_FADV_DONTNEED on Linux: the file's clean cached pages in the range are dropped.
    public const int AdviseDontNeed = 4;

    /// <summary>posix_fadvise; returns 0 or an error number (it does not set errno). A length of 0 means to the end.</summary>
    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    public static partial int Fadvise(Microsoft.Win32.SafeHandles.SafeFileHandle file, long offset, long length, int advice);
}
