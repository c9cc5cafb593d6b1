from .agreement import TeacherStudentAgreement, kendall_tau

__all__ = ['TeacherStudentAgreement', 'kendall_tau']
